# mtbert: `make run` trains the CPU main job, `make test` runs the whole test suite, `make wheel` builds the wheel,
# `make wheel-check` installs it outside the checkout and runs it, `make docs` builds the documentation site.
# Every install takes the exact versions of constraints.txt (pyproject.toml declares ranges).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
MTBERT_DATA ?= data
export MTBERT_DATA

.PHONY: install run test lint bench-step clean wheel wheel-check docs

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt torch
	$(BIN)/pip install -q -c constraints.txt -e ".[dev,methods,bench,tensorboard,mlflow,wandb]"
	touch $(STAMP)

install: $(STAMP)

# `make run`: the data from $MTBERT_DATA, else ./data, else fetched into ./data (`mtbert data download`); then
# configs/main.yaml (two-step PCGrad on the CS224N tasks, about 20 minutes on 2 cores), repeatably: a
# finished run is reported (FRESH=1 trains it again), an interrupted one resumes from its last checkpoint, and a
# folder left without a checkpoint (a run that failed early) starts afresh.
RUN_CONFIG ?= configs/main.yaml
define RUN_STATE
import sys
from mtbert.config import load_config
from mtbert.runs.layout import RunDir
run = RunDir(load_config(sys.argv[1]).output_dir)
if run.results.is_file() and (run.best.is_dir() or run.stage1.results.is_file()):  # one stage, or two
    print("finished", run.results)
elif run.root.is_dir() and any(run.root.rglob("checkpoint-*")):
    print("resume")
elif run.root.is_dir() and any(run.root.iterdir()):
    print("fresh")
endef
export RUN_STATE

run: $(STAMP)
	@$(BIN)/mtbert data download --to "$(MTBERT_DATA)" --if_missing
	@state="$$($(BIN)/python -c "$$RUN_STATE" $(RUN_CONFIG))" || exit 2; \
	case "$${FRESH:+fresh}$$state" in \
	  finished*) echo "$(RUN_CONFIG) has finished; its results ($${state#finished }) follow; make run FRESH=1 trains it again"; \
	             cat "$${state#finished }";; \
	  fresh*) $(BIN)/mtbert train $(RUN_CONFIG) --overwrite_output_dir;; \
	  resume) $(BIN)/mtbert train $(RUN_CONFIG) --resume_from_checkpoint last;; \
	  *) $(BIN)/mtbert train $(RUN_CONFIG);; \
	esac

# `make test`: ruff, then pytest with one worker per usable core, at most 8 (pytest-xdist; a test file stays on one worker, so its
# module fixtures are built once). TEST_WORKERS=0 runs the suite in this one process.
TEST_WORKERS ?= $(shell $(PYTHON) -c "import os; print(min(8, len(os.sched_getaffinity(0))))" 2>/dev/null || echo 2)
test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples docs/hooks
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples docs/hooks

# `make wheel`: dist/mtbert-VERSION-py3-none-any.whl (the presets of configs/ inside it as mtbert/presets/).
wheel: $(STAMP)
	rm -rf build dist/*.whl
	$(BIN)/pip wheel -q --no-deps -w dist .

# `make wheel-check`: the wheel installed into fresh virtual environments outside the checkout, then trained,
# evaluated and driven from Python there (.ci/wheel-check; WHEEL_CHECK_DIR keeps its folder).
wheel-check: wheel
	PYTHON=$(PYTHON) .ci/wheel-check dist/mtbert-*.whl

# `make docs`: the documentation site into site/ (mkdocs build --strict: a broken link or reference fails).
docs: $(STAMP)
	$(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) build dist site src/*.egg-info
