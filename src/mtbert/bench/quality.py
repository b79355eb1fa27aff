"""`mtbert bench quality`: the quality table (the CS224N report's results table, section 5.4), every row trained
here at one compute budget.

The table is defined by `configs/bench/table.yaml` (its rows, the reference numbers, the ensemble, the notes) and
each row is trained from `configs/bench/<name>.yaml` into `DIR/runs/<row>`; a run whose recorded config (backbone
included), data folder and budget match is reused, so the table can be built over several sittings. The budget is
counted in training samples: every training stage processes `samples_per_task_per_epoch x num_train_epochs`
samples per task of its run (3,584 in the shipped configs) whatever its task ratio, and `--budget X` scales that
by X. `--backbone M` trains every row (and embeds the floor) with M in place of the configs' model_name_or_path.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from mtbert.bench import carried
from mtbert.config import TrainConfig, load_config, safe_load, stage2_config
from mtbert.errors import ConfigError, MtbertError
from mtbert.evaluation.ensemble import dev_labels
from mtbert.evaluation.paired import dev_triples
from mtbert.io import atomic_write_json, atomic_write_text, read_json
from mtbert.runs.layout import BENCH_RUN, PREDICTIONS, RunDir
from mtbert.tasks import TaskSpec, overall_score

MARKER = BENCH_RUN  # written into each run dir: what it was trained with, and how long it took
CLOCK_SECONDS = 30.0  # how often a training run's marker takes its wall time so far
TABLE_FILE = "table.yaml"  # in the configs folder: the table's rows, reference numbers, ensemble and notes
OVERALL = "overall"  # the table's last metric column, after the task metrics its table.yaml names in `columns`
BUNDLED = "the bundled all-MiniLM-L6-v2"  # what a config without model_name_or_path trains
NOT_METRICS = ("train_seconds", "best_step", OVERALL)  # numbers of results.json that are no metric column
BUILT_ROWS = ("floor", "ensemble")  # rows built from other rows or frozen embeddings, not trained from a config
NOTE_FIELDS = ("backbone", "mode", "members", "row")  # the placeholders a note may use
BUDGET_NOTE = (
    "Budget: every training stage processes the same number of training samples per task of its run, "
    "`samples_per_task_per_epoch x num_train_epochs` (or `max_steps x per_device_train_batch_size`) "
    "in the configs, {unit:,} at `--budget {budget:g}`. A one-task run's stage processes {unit:,} samples; a "
    "stage of T tasks processes T x {unit:,} whatever its task ratio (a ratio such as 0:3:1 draws 4 batches per "
    "step, so it takes 3/4 of the steps: 0, 2.25 x and 0.75 x {unit:,} samples of the three tasks). Stage 2 of a "
    "two-step row is one single-task stage per task, so a two-step row costs twice a one-stage row. "
    "Forward-backward passes, not optimizer steps, are what is equal; `--budget X` scales every stage's samples by X."
)


# ---- the table's definition: table.yaml ------------------------------------------------------------------------


@dataclass(frozen=True)
class TableRow:
    """One row of table.yaml: what it is, its reference numbers, and the configs it is trained from."""

    name: str
    note: str
    reference: dict[str, float] | None = None  # keys of the table's metrics; any may be missing
    reference_from: str | None = None  # where the reference numbers come from, when not from the reference
    name_in_reference: str | None = None
    configs: tuple[str, ...] | None = None  # several one-task runs read as one row (default: `<row>.yaml`)


@dataclass(frozen=True)
class Reference:
    """A configs folder's table.yaml as read, plus the `--backbone` asked for: read once per `bench_quality` call
    and passed to every function that needs the table's rows, reference numbers, ensemble or notes."""

    path: Path
    backbone_name: str  # the row configs' backbone, as the table's text names it
    name: str  # whose numbers the reference numbers are ("the CS224N report")
    table: str  # which of its tables ("results table (section 5.4)")
    about: str  # how those numbers were obtained
    rows: tuple[TableRow, ...]
    ensemble_mode: str
    ensemble_members: tuple[str, ...]
    extra_row_note: str
    columns: dict[str, str]  # the task metrics shown (`<task>_<metric>`), each with its column's header
    footnote: str = ""  # said under the table (what makes its numbers differ from the reference's)
    throughput_tasks: tuple[tuple[str, ...], tuple[str, ...]] = ((), ())  # `bench throughput`: training, prediction
    backbone: str | None = None  # --backbone: model_name_or_path of every row and the floor
    paired_columns: tuple[str, ...] = ()  # columns each row is compared on, with their own paired intervals
    scored_on: str = "floor"  # the config whose data (dev files, tasks, groups) every row is scored on

    @property
    def metrics(self) -> tuple[str, ...]:
        """The table's metric keys in column order: the task metrics, then `overall`."""
        return (*self.columns, OVERALL)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.rows)

    def row(self, name: str) -> TableRow | None:
        return next((r for r in self.rows if r.name == name), None)

    @property
    def shown_backbone(self) -> str:
        """The backbone actually used, as the text names it: `--backbone` when given."""
        return self.backbone or self.backbone_name

    @property
    def not_rows(self) -> set[str]:
        """Config names that are not rows of their own: the floor's and those of several-run rows."""
        return {*BUILT_ROWS, TABLE_FILE.removesuffix(".yaml"), *(c for r in self.rows for c in r.configs or ())}

    def config_names(self, row: str) -> tuple[str, ...]:
        found = self.row(row)
        return found.configs if found is not None and found.configs else (row,)

    def note(self, name: str) -> str:
        """The row's note with its placeholders filled, and its name in the reference's table."""
        row = self.row(name)
        text = fill(row.note if row else self.extra_row_note, self, name)
        if row is not None and row.reference_from:
            return f"{text} (reference numbers: {row.reference_from})"
        if row is not None and row.name_in_reference:
            return f"{text} ({self.name}: {row.name_in_reference})"
        return text


def fill(text: str, ref: Reference, row: str) -> str:
    members = ", ".join(f"`{m}`" for m in ref.ensemble_members)
    return text.format_map({"backbone": ref.shown_backbone, "mode": ref.ensemble_mode, "members": members,
                            "row": row})


def load_reference(configs_dir: Path, backbone: str | None = None) -> Reference:
    """Read `configs_dir/table.yaml` (safe_load) and check it; every problem is one ConfigError naming the key."""
    path = Path(configs_dir) / TABLE_FILE
    if not path.is_file():
        raise ConfigError(f"{path}: not found; a folder of row configs needs a table.yaml listing the quality "
                          "table's rows, reference numbers, ensemble and notes (see configs/bench/table.yaml)")
    try:
        raw = safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        raise ConfigError(f"{path}: cannot be read as UTF-8 text") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        raise ConfigError(f"{path}{f', line {mark.line + 1}' if mark else ''}: not valid YAML") from None
    where = str(path)
    top = mapping(raw, where, ("backbone", "reference", "columns", "footnote", "throughput", "rows", "ensemble",
                               "extra_row_note", "paired_columns", "scored_on"),
                  ("backbone", "reference", "columns", "rows", "extra_row_note"))
    timed = mapping(top.get("throughput") or {}, f"{where}: throughput", ("train_tasks", "predict_tasks"), ())
    columns = {str(k): text_value(v, f"{where}: columns.{k}")
               for k, v in mapping(top["columns"], f"{where}: columns", None, ()).items()}
    if not columns or OVERALL in columns:
        raise ConfigError(f"{where}: columns: name each task metric shown (e.g. sst_acc: SST acc); {OVERALL} "
                          "always follows them")
    about = mapping(top["reference"], f"{where}: reference", ("name", "table", "about"), ("name", "table", "about"))
    rows_raw = mapping(top["rows"], f"{where}: rows", None, ())
    if not rows_raw:
        raise ConfigError(f"{where}: rows: list at least one row")
    rows = tuple(table_row(str(name), value, f"{where}: rows.{name}", (*columns, OVERALL))
                 for name, value in rows_raw.items())
    ensemble = mapping(top.get("ensemble") or {}, f"{where}: ensemble", ("mode", "members"),
                       ("mode", "members") if "ensemble" in rows_raw else ())
    ref = Reference(
        path=path, backbone_name=text_value(top["backbone"], f"{where}: backbone"),
        name=text_value(about["name"], f"{where}: reference.name"),
        table=text_value(about["table"], f"{where}: reference.table"),
        about=text_value(about["about"], f"{where}: reference.about"), rows=rows,
        ensemble_mode=text_value(ensemble.get("mode", "vote"), f"{where}: ensemble.mode"),
        ensemble_members=names_value(ensemble.get("members", []), f"{where}: ensemble.members"),
        extra_row_note=text_value(top["extra_row_note"], f"{where}: extra_row_note"), columns=columns,
        footnote=text_value(top["footnote"], f"{where}: footnote") if top.get("footnote") is not None else "",
        throughput_tasks=(names_value(timed.get("train_tasks", []), f"{where}: throughput.train_tasks"),
                          names_value(timed.get("predict_tasks", []), f"{where}: throughput.predict_tasks")),
        backbone=backbone,
        paired_columns=names_value(top.get("paired_columns", []), f"{where}: paired_columns"),
        scored_on=text_value(top.get("scored_on", "floor"), f"{where}: scored_on"),
    )
    for column in ref.paired_columns:
        if column not in columns:
            raise ConfigError(f"{where}: paired_columns: '{column}' is not one of the columns "
                              f"({', '.join(columns)})")
    check_reference(ref, where)
    for member in ref.ensemble_members if "ensemble" in ref.names else ():
        if member not in ref.names and not (Path(configs_dir) / f"{member}.yaml").is_file():
            raise ConfigError(f"{where}: ensemble.members: '{member}' is neither a row of the table nor a config "
                              f"in {configs_dir}")
    return ref


def check_reference(ref: Reference, where: str) -> None:
    """The ensemble's mode and members, and every note's placeholders."""
    from mtbert.evaluation.ensemble import MODES

    if "ensemble" in ref.names:
        if ref.ensemble_mode not in MODES:
            raise ConfigError(f"{where}: ensemble.mode: '{ref.ensemble_mode}' is not one of {' | '.join(MODES)}")
        if not ref.ensemble_members:
            raise ConfigError(f"{where}: ensemble.members: name at least one row")
        for member in ref.ensemble_members:
            if member in ref.not_rows or ref.config_names(member) != (member,):
                raise ConfigError(f"{where}: ensemble.members: '{member}' is not a row trained from one config")
    for key, text in [(f"rows.{r.name}.note", r.note) for r in ref.rows] + [("extra_row_note", ref.extra_row_note)]:
        try:
            fill(text, ref, "row")
        except KeyError as err:
            raise ConfigError(f"{where}: {key}: unknown placeholder {{{err.args[0]}}} (known: "
                              f"{', '.join('{' + f + '}' for f in NOTE_FIELDS)})") from None
        except (ValueError, IndexError):
            raise ConfigError(f"{where}: {key}: a stray {{ or }} (write {{{{ or }}}} for a brace)") from None


def table_row(name: str, raw: Any, where: str, metrics: tuple[str, ...]) -> TableRow:
    values = mapping(raw, where, ("note", "reference", "reference_from", "name_in_reference", "configs"), ("note",))
    reference = None
    if values.get("reference") is not None:
        numbers = mapping(values["reference"], f"{where}.reference", metrics, ())
        reference = {}
        for key, value in numbers.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"{where}.reference.{key}: must be a number, not {value!r}")
            reference[key] = float(value)
    configs = names_value(values["configs"], f"{where}.configs") if values.get("configs") is not None else None
    if configs is not None and name in BUILT_ROWS:
        raise ConfigError(f"{where}.configs: the {name} row is built, not trained from configs")
    optional = {k: text_value(values[k], f"{where}.{k}") for k in ("reference_from", "name_in_reference")
                if values.get(k) is not None}
    return TableRow(name, text_value(values["note"], f"{where}.note"), reference, configs=configs, **optional)


def mapping(raw: Any, where: str, known: tuple[str, ...] | None, required: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: must be a mapping of keys to values")
    for key in raw:
        if known is not None and key not in known:
            raise ConfigError(f"{where}: unknown key '{key}' (keys: {', '.join(known)})")
    for key in required:
        if raw.get(key) is None:
            raise ConfigError(f"{where}: missing key '{key}'")
    return raw


def text_value(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: must be a non-empty text")
    return value.strip()


def names_value(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ConfigError(f"{where}: must be a list of row or config names")
    return tuple(v.strip() for v in value)


def resolve_backbone(value: str | None) -> str | None:
    """`--backbone`: a local folder (made absolute, so that a run's signature does not depend on the working
    folder) or a Hugging Face hub name, kept as given."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        raise MtbertError("--backbone: give a Hugging Face model name or a local model folder")
    path = Path(text).expanduser()
    if path.exists():
        if not path.is_dir():
            raise MtbertError(f"--backbone: {text} is a file, not a model folder")
        return str(path.resolve())
    if text.startswith(("/", ".", "~")) or text.count("/") > 1 or "\\" in text:
        raise MtbertError(f"--backbone: {text} is not a folder (give a local model folder or a Hugging Face "
                          "model name such as sentence-transformers/all-mpnet-base-v2)")
    return text


@dataclass
class Row:
    """One row of the table as it stands in the output folder."""

    name: str
    done: bool = False
    metrics: dict[str, float] = field(default_factory=dict)
    overall_ci95: list[float] | None = None
    train_seconds: float | None = None
    wall_seconds: float | None = None
    run_dir: str | None = None
    runs: list[dict[str, Any]] = field(default_factory=list)
    stages: list[dict[str, Any]] = field(default_factory=list)
    members: list[str] = field(default_factory=list)
    reused: bool = False
    note: str = ""
    versus: dict[str, Any] | None = None  # the paired comparison with its reference row (`reference_row`)
    versus_floor: dict[str, Any] | None = None  # the same with the frozen-embedding floor, which every row must beat
    versus_columns: dict[str, Any] | None = None  # each paired column's difference with the reference row
    carried: list[dict[str, Any]] = field(default_factory=list)  # what restores its runs elsewhere (bench.carried)
    restored_from: dict[str, Any] | None = None  # the earlier table the row was taken from (`--from_table`)

    def to_dict(self, ref: Reference) -> dict[str, Any]:
        row = ref.row(self.name)
        numbers = row.reference if row is not None else None
        return {
            "row": self.name, "status": "done" if self.done else (self.note or "not run"),
            **{k: self.metrics.get(k) for k in ref.metrics}, "overall_ci95": self.overall_ci95,
            "train_seconds": self.train_seconds, "wall_seconds": self.wall_seconds, "run_dir": self.run_dir,
            "reused": self.reused, "members": self.members or None, "runs": self.runs, "stages": self.stages,
            "reference": {k: numbers.get(k) for k in ref.metrics} if numbers else None, "versus": self.versus,
            "versus_floor": self.versus_floor, "versus_columns": self.versus_columns,
            "restored_from": self.restored_from,
            "carried": [run for run in self.carried if run["dev_predictions"] is not None] or None,
        }


# ---- the command -------------------------------------------------------------------------------------------------


def bench_quality(output_dir: Path, rows: list[str] | None, budget: float, configs_dir: Path,
                  backbone: str | None = None, from_table: Path | None = None) -> dict:
    """Train the asked rows (default: every row of table.yaml), reusing finished ones, and write table.md and
    table.json; `backbone` replaces every row config's model_name_or_path; `from_table`: an earlier table.json
    whose finished rows are taken in when this call would train them alike (`restore_rows`)."""
    if not (math.isfinite(budget) and budget > 0):
        raise MtbertError(f"--budget: must be a positive number, not {budget:g}")
    configs_dir = Path(configs_dir)
    if not configs_dir.is_dir():
        raise MtbertError(f"--configs: {configs_dir} is not a folder of row configs")
    ref = load_reference(configs_dir, resolve_backbone(backbone))
    output_dir = Path(output_dir)
    asked = resolve_rows(rows, configs_dir, ref)
    command = (f"mtbert bench quality --output_dir {output_dir}" + (f" --rows {','.join(rows)}" if rows else "")
               + f" --budget {budget:g} --configs {configs_dir}" + (f" --backbone {backbone}" if backbone else "")
               + (f" --from_table {from_table}" if from_table else ""))
    started = time.perf_counter()
    if from_table is not None:
        restore_rows(Path(from_table), output_dir, configs_dir, budget, ref)
    shown = table_rows(asked, output_dir, configs_dir, ref)
    table: dict[str, Row] = {}
    for name in shown:
        table[name] = read_row(name, output_dir, configs_dir, budget, ref)
    for name in asked:
        elapsed = time.perf_counter() - started
        table[name] = read_row(name, output_dir, configs_dir, budget, ref)  # again: a member may have changed
        if table[name].done:
            progress(f"row {name}: reused from {table[name].run_dir} (elapsed {elapsed:.0f} s)")
            continue
        progress(f"row {name}: running (elapsed {elapsed:.0f} s)")
        row_started = time.perf_counter()
        table[name] = run_row(name, output_dir, configs_dir, budget, ref)
        progress(f"row {name}: done in {time.perf_counter() - row_started:.0f} s, overall "
                 f"{table[name].metrics['overall']:.4f} (elapsed {time.perf_counter() - started:.0f} s)")
        write_table(output_dir, table, budget, configs_dir, command, time.perf_counter() - started, ref)
    for name in shown:
        if name not in asked:  # an ensemble not asked goes stale when a member was trained again
            table[name] = read_row(name, output_dir, configs_dir, budget, ref)
    return write_table(output_dir, table, budget, configs_dir, command, time.perf_counter() - started, ref)


def restore_rows(path: Path, output_dir: Path, configs_dir: Path, budget: float, ref: Reference) -> list[str]:
    """Take the finished rows of an earlier table.json (`bench.carried`) into `output_dir` when this call would train
    them alike (same signature) and their run folders do not exist yet; the ensemble is rebuilt, not taken. Every
    check runs before anything is written. Returns the rows taken."""
    data = carried.read_carried_table(path)
    source = {"file": str(path), "time": data.get("time"), "command": data.get("command"),
              "machine": data.get("machine"), "cpu_model": data.get("cpu_model"),
              "cpu_capability": data.get("cpu_capability"), "cpus": data.get("cpus"), "device": data.get("device")}
    known = set(known_rows(configs_dir, ref))
    plans: list[tuple[str, list[RestoredRun]]] = []
    for row in data["rows"]:
        name = row["row"]
        if name == "ensemble" or row.get("status") != "done":
            continue  # the ensemble is voted again from its members; an unfinished row has nothing to take
        if name not in known or (name == "floor" and not (configs_dir / "floor.yaml").is_file()):
            why = f"no such row in {configs_dir}"
        elif not row.get("carried"):
            why = "it carries no dev predictions"
        elif read_row(name, output_dir, configs_dir, budget, ref).done:
            progress(f"row {name}: finished in {output_dir}; not taken from {path}")
            continue
        else:
            runs, why = restore_plan(name, row["carried"], output_dir, configs_dir, budget, ref)
            if not why:
                plans.append((name, runs))
                continue
        progress(f"row {name}: not taken from {path}: {why}")
    if not plans:
        return []
    labels: dict[str, dict[str, float] | None] = {}
    specs: dict[str, TaskSpec] = {}
    for _, runs in plans:
        for _, cfg, _ in runs:  # every task's dev labels, read once, from the data folder its run's signature matched
            specs.update({spec.name: spec for spec in cfg.task_specs()})
            if not {spec.name for spec in cfg.task_specs()} <= labels.keys():
                labels.update({t: v for t, v in data_labels(cfg).items() if t not in labels})
    for _, runs in plans:
        for run, _, _ in runs:
            carried.check_run(path, data, run, labels, specs)
    if ref.ensemble_mode == "soft" and {name for name, _ in plans} & set(ref.ensemble_members):
        progress("the soft ensemble cannot combine taken rows: their scores/ are not carried")
    for name, runs in plans:
        for run, cfg, run_dir in runs:
            carried.restore_run(run, cfg, run_dir, MARKER, source, labels, specs)
        progress(f"row {name}: taken from {path} ({source_text(runs[0][0]['restored_from'] or source)})")
    return [name for name, _ in plans]


RestoredRun = tuple[dict[str, Any], TrainConfig, Path]  # a carried run, the config it matched, where it goes


def restore_plan(name: str, runs: list[dict[str, Any]], output_dir: Path, configs_dir: Path, budget: float,
                 ref: Reference) -> tuple[list[RestoredRun], str]:
    """Where each carried run of row `name` would be restored, or why the row cannot be taken (one phrase):
    a run trained otherwise than this call would train it, a run folder that exists, a run missing."""
    plan: list[RestoredRun] = []
    for run in runs:
        if name == "floor":
            cfg = floor_config(output_dir, configs_dir, ref.backbone)
            run_dir, wanted = Path(cfg.output_dir), floor_signature(cfg)
            matches = same(run["signature"], wanted)
        elif run["config"] in ref.config_names(name) and (configs_dir / f"{run['config']}.yaml").is_file():
            run_dir = run_dir_of(output_dir, name, run["config"], ref)
            cfg = planned_config(configs_dir / f"{run['config']}.yaml", run_dir, budget, ref.backbone)
            wanted = signature(cfg, budget)
            matches = same_signature(run["signature"], wanted)
        else:
            return [], f"its run {run['config']} is not a config of the row here"
        if not matches:
            why = stale_note(run["signature"], wanted).replace("stale", "trained otherwise")
            return [], why.replace("config, data or budget", "config or data") if name == "floor" else why
        if run_dir.exists():
            return [], f"{run_dir} exists (not overwritten)"
        plan.append((run, cfg, run_dir))
    wanted_configs = {"floor"} if name == "floor" else set(ref.config_names(name))
    if {run["config"] for run, _, _ in plan} != wanted_configs:
        return [], "it carries not every run of the row"
    return plan, ""


def progress(message: str) -> None:
    print(f"[bench quality] {message}", file=sys.stderr, flush=True)


def resolve_rows(rows: list[str] | None, configs_dir: Path, ref: Reference) -> list[str]:
    """The rows to run, in table order, with the ensemble's members added before it."""
    names = [r.strip() for r in (rows if rows is not None else ref.names) if r.strip()]
    if not names:
        raise MtbertError("--rows: name at least one row")
    known = known_rows(configs_dir, ref)
    for name in names:
        if name not in known:
            raise MtbertError(f"--rows: unknown row '{name}' (rows: {', '.join(known)})")
    if "ensemble" in names:
        names += [m for m in ref.ensemble_members if m not in names]
    return [r for r in known if r in names]


def known_rows(configs_dir: Path, ref: Reference) -> list[str]:
    """The rows of table.yaml, then one row per other config in the folder."""
    extra = sorted(p.stem for p in configs_dir.glob("*.yaml") if p.stem not in ref.names and p.stem not in
                   ref.not_rows)
    return [*ref.names, *extra]


def table_rows(asked: list[str], output_dir: Path, configs_dir: Path, ref: Reference) -> list[str]:
    """Rows the table shows: those of table.yaml, plus any other row asked now or with a run dir in the output
    folder."""
    return [r for r in known_rows(configs_dir, ref)
            if r in ref.names or r in asked or (output_dir / "runs" / r / MARKER).is_file()]


def run_dir_of(output_dir: Path, row: str, config: str, ref: Reference) -> Path:
    return output_dir / "runs" / row / config if ref.config_names(row) != (row,) else output_dir / "runs" / row


# ---- configs and the budget --------------------------------------------------------------------------------------


def planned_config(path: Path, run_dir: Path, budget: float, backbone: str | None = None) -> TrainConfig:
    """A row config with its output dir set, every stage's training samples scaled by `budget`, and
    model_name_or_path replaced by `backbone` when given."""
    if not path.is_file():
        raise MtbertError(f"{path}: config of a bench row not found")
    fixed: dict[str, Any] = {"output_dir": str(run_dir)}
    if backbone is not None:
        fixed["model_name_or_path"] = backbone
    cfg = load_config(path, fixed)
    return load_config(path, {**fixed, **scaled(cfg.to_dict(), cfg.per_device_train_batch_size, budget)})


def scaled(values: dict[str, Any], unit: int, budget: float) -> dict[str, Any]:
    """Overrides that scale samples_per_task_per_epoch (in whole batches), max_steps and mlm_steps by budget, in both
    stages."""
    out: dict[str, Any] = {}
    if "samples_per_task_per_epoch" in values:
        batches = values["samples_per_task_per_epoch"] / unit
        out["samples_per_task_per_epoch"] = unit * max(1, round(batches * budget))
    for key in ("max_steps", "mlm_steps"):
        if values.get(key, -1) > 0:
            out[key] = max(1, round(values[key] * budget))
    if values.get("two_step"):
        stage2 = {k: v for k, v in values["two_step"].items() if k in ("samples_per_task_per_epoch", "max_steps")}
        if stage2:
            out["two_step"] = scaled(stage2, values["two_step"].get("per_device_train_batch_size", unit), budget)
    return out


def stages(cfg: TrainConfig) -> list[dict[str, Any]]:
    """Every training stage of a config: its steps, samples per task, and samples per task of the run."""

    def one(name: str, stage: TrainConfig, ratios: dict[str, int]) -> dict[str, Any]:
        unit = stage.per_device_train_batch_size
        steps = stage.max_steps if stage.max_steps > 0 else math.ceil(
            stage.num_train_epochs * math.ceil(stage.samples_per_task_per_epoch / unit))
        samples = {task: steps * unit * r for task, r in ratios.items()}
        sampling = getattr(stage, "sampling", "fixed-ratio")
        if sampling != "fixed-ratio":  # its shares depend on the data; a step still takes a batch per active task
            samples = {f"all tasks ({sampling})": steps * unit * sum(1 for r in ratios.values() if r > 0)}
        return {"stage": name, "steps": steps, "samples": samples,
                "samples_per_task": round(sum(samples.values()) / len(ratios))}

    out = []
    if not (cfg.two_step_settings and cfg.two_step_settings.init_from):
        out.append(one("stage 1" if cfg.two_step else "train", cfg, cfg.ratios()))
    if cfg.two_step is not None:
        stage2 = stage2_config(cfg)
        out += [one(f"stage 2 {spec.name}", stage2, {spec.name: 1}) for spec in cfg.task_specs()]
    if cfg.mlm_steps and not (cfg.two_step_settings and cfg.two_step_settings.init_from):  # before stage 1; listed last
        sentences = cfg.mlm_steps * cfg.per_device_train_batch_size
        out.append({"stage": "masked-LM", "steps": cfg.mlm_steps, "samples": {"training sentences": sentences},
                    "samples_per_task": round(sentences / len(cfg.task_specs()))})
    return out


def signature(cfg: TrainConfig, budget: float) -> dict[str, Any]:
    """What decides a run's results: its config (but not where it is; its model_name_or_path, which `--backbone`
    sets, included), its data folder and the budget."""
    values = cfg.to_dict()
    values.pop("output_dir")
    return {"config": values, "data_dir": str(cfg.resolved_data_dir().resolve()), "budget": budget}


def same(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def same_signature(stored: Any, wanted: dict[str, Any]) -> bool:
    """Whether a run's stored signature matches: config keys at their default value count as absent, so that a
    key added to mtbert later (at a default that changes nothing) leaves earlier runs current."""
    defaults = TrainConfig().to_dict()

    def without_defaults(sig: Any) -> Any:
        if not isinstance(sig, dict) or not isinstance(sig.get("config"), dict):
            return sig
        config = {k: v for k, v in sig["config"].items() if not (k in defaults and same(v, defaults[k]))}
        return {**sig, "config": config}

    return same(without_defaults(stored), without_defaults(wanted))


def stale_note(stored: Any, wanted: dict[str, Any]) -> str:
    """Why a run's stored signature does not match: another backbone, or anything else."""
    config = stored.get("config") if isinstance(stored, dict) else None
    if isinstance(config, dict):
        before, now = config.get("model_name_or_path"), wanted["config"].get("model_name_or_path")
        if before != now:
            return f"stale (trained with backbone {before or BUNDLED}, not {now or BUNDLED})"
    return "stale (config, data or budget changed)"


# ---- training rows -----------------------------------------------------------------------------------------------


def read_row(name: str, output_dir: Path, configs_dir: Path, budget: float, ref: Reference | None = None) -> Row:
    """The row as finished in the output folder, or not done when any of its runs is missing or stale (`ref`:
    the folder's table.yaml, read here when not given)."""
    ref = ref or load_reference(configs_dir)
    if name == "ensemble":
        unfinished = [m for m in ref.ensemble_members if not read_row(m, output_dir, configs_dir, budget, ref).done]
        if unfinished:
            return Row(name, note=f"not run (member {', '.join(unfinished)} not finished at this budget)")
        return read_ensemble(output_dir, ref)
    if name == "floor":
        return read_floor(output_dir, configs_dir, ref)
    runs = []
    for config in ref.config_names(name):
        path = configs_dir / f"{config}.yaml"
        run_dir = run_dir_of(output_dir, name, config, ref)
        if not path.is_file():
            return Row(name, note=f"no config {path}")
        cfg = planned_config(path, run_dir, budget, ref.backbone)
        marker = read_json(run_dir / MARKER)
        results = read_json(RunDir(run_dir).results)
        if marker is None or results is None or marker.get("wall_seconds") is None:
            return Row(name)
        wanted = signature(cfg, budget)
        if not same_signature(marker.get("signature"), wanted):
            return Row(name, note=stale_note(marker.get("signature"), wanted))
        runs.append((config, cfg, run_dir, results, marker))
    return training_row(name, output_dir, runs, reused=True)


def run_row(name: str, output_dir: Path, configs_dir: Path, budget: float, ref: Reference) -> Row:
    """Train (or resume, or reuse) every run of a row and read the row back."""
    if name == "ensemble":
        return run_ensemble_row(output_dir, ref)
    if name == "floor":
        return run_floor(output_dir, configs_dir, ref)
    runs = []
    for config in ref.config_names(name):
        run_dir = run_dir_of(output_dir, name, config, ref)
        cfg = planned_config(configs_dir / f"{config}.yaml", run_dir, budget, ref.backbone)
        runs.append((config, cfg, run_dir, *train_run(cfg, run_dir, budget)))
    return training_row(name, output_dir, runs, reused=False)


def train_run(cfg: TrainConfig, run_dir: Path, budget: float) -> tuple[dict[str, Any], dict[str, Any]]:
    """Reuse a finished run with this signature, resume an unfinished one, else train it afresh."""
    import mtbert.training.run

    wanted = signature(cfg, budget)
    marker = read_json(run_dir / MARKER)
    results = read_json(RunDir(run_dir).results)
    started = marker is not None and same_signature(marker.get("signature"), wanted)
    if started and results is not None and marker.get("wall_seconds") is not None:
        return results, marker
    resume = None
    if started and (cfg.two_step is not None or RunDir(run_dir).checkpoints()):
        resume = "last"  # a two-step run also skips its finished stages
    earlier = float(marker.get("wall_seconds_before", 0.0)) if started and resume else 0.0
    marker = {"signature": wanted, "stages": stages(cfg), "wall_seconds": None, "wall_seconds_before": earlier}
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run_dir / MARKER, marker)
    plan = ", ".join(f"{s['stage']}: {s['steps']} steps" for s in marker["stages"])
    progress(f"  training {run_dir} ({plan})" + (" (resumed)" if resume else ""))
    with SittingClock(run_dir / MARKER, marker):
        results = mtbert.training.run.train(cfg, resume_from_checkpoint=resume, overwrite_output_dir=True)
    marker["wall_seconds"] = marker["wall_seconds_before"]
    atomic_write_json(run_dir / MARKER, marker)
    return results, marker


class SittingClock:
    """Adds this sitting's wall seconds to `marker["wall_seconds_before"]` in the marker file, every
    `CLOCK_SECONDS` while the block runs and once at its end, so that a sitting ended by SIGKILL or a lost machine
    still counts (to within `CLOCK_SECONDS`)."""

    def __init__(self, path: Path, marker: dict[str, Any]) -> None:
        self.path, self.marker = path, marker
        self.earlier = float(marker.get("wall_seconds_before", 0.0))
        self.lock, self.stopped = threading.Lock(), threading.Event()

    def write(self) -> None:
        with self.lock:
            self.marker["wall_seconds_before"] = round(self.earlier + time.perf_counter() - self.started, 1)
            atomic_write_json(self.path, self.marker)

    def _tick(self) -> None:
        while not self.stopped.wait(CLOCK_SECONDS):
            self.write()

    def __enter__(self) -> SittingClock:
        self.started = time.perf_counter()
        self.thread = threading.Thread(target=self._tick, name="bench-wall-clock", daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.thread.join()
        self.write()


def training_row(name: str, output_dir: Path, runs: list[tuple], reused: bool) -> Row:
    """A row from its runs' results.json: one run as is; several one-task runs combined (single-task)."""
    specs: list[TaskSpec] = []
    metrics: dict[str, float] = {}
    infos = []
    for config, cfg, run_dir, results, marker in runs:
        metrics.update({k: float(v) for k, v in results.items()  # every metric the run reports (frame accuracy too)
                        if isinstance(v, int | float) and not isinstance(v, bool) and k not in NOT_METRICS})
        for spec in cfg.task_specs():
            if spec.metric_key in results:
                specs.append(spec)
                metrics[spec.metric_key] = float(results[spec.metric_key])
        infos.append({"config": config, "run_dir": str(run_dir), "train_seconds": results.get("train_seconds"),
                      "wall_seconds": marker.get("wall_seconds"),
                      **{k: results[k] for k in (*(s.metric_key for s in cfg.task_specs()), OVERALL, "overall_ci95")
                         if k in results}})
    if len(runs) == 1:
        results = runs[0][3]
        metrics["overall"] = float(results["overall"])
        interval = results.get("overall_ci95")
    else:
        metrics["overall"] = overall_score(specs, metrics)
        interval = combined_interval([(cfg, run_dir) for _, cfg, run_dir, _, _ in runs])
    return Row(
        name, done=True, metrics=metrics, overall_ci95=[float(v) for v in interval] if interval else None,
        train_seconds=round(sum(float(r[3].get("train_seconds") or 0.0) for r in runs), 1),
        wall_seconds=round(sum(float(r[4].get("wall_seconds") or 0.0) for r in runs), 1),
        run_dir=str(output_dir / "runs" / name), runs=infos,
        stages=[{"config": r[0], **s} for r in runs for s in r[4].get("stages", [])], reused=reused,
        carried=[carried.carried_run(r[0], r[2], r[1].task_specs(), r[3], r[4]) for r in runs],
        restored_from=next((r[4]["restored_from"] for r in runs if r[4].get("restored_from")), None),
    )


def combined_interval(runs: list[tuple[TrainConfig, Path]]) -> tuple[float, float]:
    """The overall score's bootstrap interval over the combined dev predictions of one-task runs."""
    from mtbert.evaluation.metrics import bootstrap_overall

    specs = [spec for cfg, _ in runs for spec in scored_specs(cfg)]
    labels = {spec.name: dev_labels(spec, cfg.resolved_data_dir(), cfg.max_eval_samples)
              for cfg, _ in runs for spec in scored_specs(cfg)}
    return bootstrap_overall(dev_triples([run_dir for _, run_dir in runs], specs, labels))


# ---- the ensemble ------------------------------------------------------------------------------------------------


def member_dirs(output_dir: Path, ref: Reference) -> list[Path]:
    return [output_dir / "runs" / m for m in ref.ensemble_members]


def ensemble_signature(output_dir: Path, ref: Reference) -> dict[str, Any] | None:
    """The members' prediction files (hashed): the ensemble is stale when any of them changed."""
    hashes = {}
    for member in member_dirs(output_dir, ref):
        if not RunDir(member).results.is_file():
            return None
        digest = hashlib.sha256()
        for path in sorted((member / PREDICTIONS).glob("*.csv")):
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
        hashes[member.name] = digest.hexdigest()
    return {"mode": ref.ensemble_mode, "members": hashes}


def read_ensemble(output_dir: Path, ref: Reference) -> Row:
    run_dir = output_dir / "runs" / "ensemble"
    marker, results = read_json(run_dir / MARKER), read_json(RunDir(run_dir).results)
    wanted = ensemble_signature(output_dir, ref)
    if marker is None or results is None or wanted is None:
        return Row("ensemble")
    if not same(marker.get("signature"), wanted):
        return Row("ensemble", note="stale (a member changed)")
    return ensemble_row(output_dir, results, marker, ref, reused=True)


def run_ensemble_row(output_dir: Path, ref: Reference) -> Row:
    """Vote the members' predictions with `mtbert.evaluation.ensemble.run_ensemble` into DIR/runs/ensemble."""
    from mtbert.evaluation.ensemble import run_ensemble

    members = member_dirs(output_dir, ref)
    wanted = ensemble_signature(output_dir, ref)
    if wanted is None:
        raise MtbertError(f"ensemble: its members ({', '.join(ref.ensemble_members)}) must be finished first")
    run_dir = output_dir / "runs" / "ensemble"
    clock = time.perf_counter()
    results = run_ensemble(members, run_dir, ref.ensemble_mode)
    marker = {"signature": wanted, "wall_seconds": round(time.perf_counter() - clock, 1)}
    atomic_write_json(run_dir / MARKER, marker)
    return ensemble_row(output_dir, results, marker, ref, reused=False)


def ensemble_row(output_dir: Path, results: dict[str, Any], marker: dict[str, Any], ref: Reference,
                 reused: bool) -> Row:
    metrics = results.get("ensemble", {})
    member_results = [read_json(RunDir(m).results) or {} for m in member_dirs(output_dir, ref)]
    return Row(
        "ensemble", done=True, metrics={k: float(metrics[k]) for k in ref.metrics if k in metrics},
        overall_ci95=metrics.get("overall_ci95"),
        train_seconds=round(sum(float(r.get("train_seconds") or 0.0) for r in member_results), 1),
        wall_seconds=marker.get("wall_seconds"), run_dir=str(output_dir / "runs" / "ensemble"),
        members=list(ref.ensemble_members), reused=reused,
        runs=[{"member": m, **{k: r.get(k) for k in ref.metrics}}
              for m, r in zip(ref.ensemble_members, results.get("member_metrics", []), strict=False)],
    )


# ---- the floor: frozen embeddings, no fine-tuning ----------------------------------------------------------------


def floor_signature(cfg: TrainConfig) -> dict[str, Any]:
    keys = ("model_name_or_path", "tasks", "max_length", "max_train_samples", "max_eval_samples")
    return {"config": {k: getattr(cfg, k) for k in keys}, "data_dir": str(cfg.resolved_data_dir().resolve())}


def floor_config(output_dir: Path, configs_dir: Path, backbone: str | None = None,
                 name: str = "floor") -> TrainConfig:
    """floor.yaml (or the config `name`, table.yaml's `scored_on`) with its output dir set and model_name_or_path
    replaced by `backbone` when given."""
    path = configs_dir / f"{name}.yaml"
    if not path.is_file():
        raise MtbertError(f"{path}: config of the {name} row not found")
    fixed: dict[str, Any] = {"output_dir": str(output_dir / "runs" / name)}
    if backbone is not None:
        fixed["model_name_or_path"] = backbone
    return load_config(path, fixed)


def read_floor(output_dir: Path, configs_dir: Path, ref: Reference) -> Row:
    if not (configs_dir / "floor.yaml").is_file():
        return Row("floor", note=f"no config {configs_dir / 'floor.yaml'}")
    cfg = floor_config(output_dir, configs_dir, ref.backbone)
    run_dir = Path(cfg.output_dir)
    marker, results = read_json(run_dir / MARKER), read_json(RunDir(run_dir).results)
    if marker is None or results is None:
        return Row("floor")
    wanted = floor_signature(cfg)
    if not same(marker.get("signature"), wanted):
        note = stale_note(marker.get("signature"), wanted)
        return Row("floor", note=note.replace("config, data or budget", "config or data"))
    return floor_row(run_dir, cfg.task_specs(), results, marker, reused=True)


def run_floor(output_dir: Path, configs_dir: Path, ref: Reference) -> Row:
    cfg = floor_config(output_dir, configs_dir, ref.backbone)
    run_dir = Path(cfg.output_dir)
    clock = time.perf_counter()
    results = floor_results(cfg, run_dir)
    marker = {"signature": floor_signature(cfg), "wall_seconds": round(time.perf_counter() - clock, 1)}
    atomic_write_json(run_dir / MARKER, marker)
    return floor_row(run_dir, cfg.task_specs(), results, marker, reused=False)


def floor_row(run_dir: Path, specs: list[TaskSpec], results: dict[str, Any], marker: dict[str, Any],
              reused: bool) -> Row:
    keys = (*(s.metric_key for s in specs), OVERALL)
    return Row("floor", done=True, metrics={k: float(results[k]) for k in keys if k in results},
               overall_ci95=results.get("overall_ci95"), train_seconds=results.get("train_seconds"),
               wall_seconds=marker.get("wall_seconds"), run_dir=str(run_dir), reused=reused,
               carried=[carried.carried_run("floor", run_dir, specs, results, marker)],
               restored_from=marker.get("restored_from"))


def floor_results(cfg: TrainConfig, run_dir: Path) -> dict[str, Any]:
    """Dev metrics of frozen mean-pooled embeddings: logistic regression (one-sentence classification), a cosine
    threshold fitted on train (pair classification), the cosine rescaled to the label range (pair regression)."""
    from mtbert.data.loading import read_split
    from mtbert.evaluation.metrics import bootstrap_overall, compute_metrics
    from mtbert.evaluation.predict import write_cs224n
    from mtbert.model import load_encoder

    clock = time.perf_counter()
    encoder, tokenizer = load_encoder(cfg.model_name_or_path, 0.0, cfg.trust_remote_code)
    data_dir = cfg.resolved_data_dir()
    examples = {}
    for spec in cfg.task_specs():
        for split, limit in (("train", cfg.max_train_samples), ("dev", cfg.max_eval_samples)):
            name = getattr(spec, f"{split}_file")
            if not name:
                raise MtbertError(f"floor: task {spec.name} has no {split} file")
            examples[spec.name, split] = read_split(spec, split, data_dir).examples[:limit]
    texts = sorted({t for rows in examples.values() for e in rows for t in e.texts})
    vectors = dict(zip(texts, embed(encoder, tokenizer, texts, cfg.max_length, cfg.per_device_eval_batch_size),
                       strict=True))
    results = {}
    for spec in cfg.task_specs():
        train, dev = examples[spec.name, "train"], examples[spec.name, "dev"]
        y_train = np.array([e.label for e in train])
        x_train = np.stack([[vectors[t] for t in e.texts] for e in train])
        x_dev = np.stack([[vectors[t] for t in e.texts] for e in dev])
        predictions = spec.task_kind.frozen_floor(spec, x_train, y_train, x_dev)
        write_cs224n(RunDir(run_dir).prediction(spec.name, "dev"), spec, [e.id for e in dev], predictions)
        results[spec.name] = (spec, predictions, np.array([e.label for e in dev]))
    metrics: dict[str, Any] = compute_metrics(results)
    metrics["overall_ci95"] = list(bootstrap_overall(results))
    metrics["train_seconds"] = round(time.perf_counter() - clock, 1)
    atomic_write_json(RunDir(run_dir).results, metrics)
    return metrics


def embed(encoder, tokenizer, texts: list[str], max_length: int, batch_size: int) -> np.ndarray:
    """L2-normalised masked-mean embeddings (as sentence-transformers pools its all-MiniLM-L6-v2 and
    all-mpnet-base-v2 models), shortest first."""
    import torch
    from tqdm.auto import tqdm

    encoder.eval()
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = np.zeros((len(texts), encoder.config.hidden_size), dtype=np.float32)
    with torch.inference_mode():
        for start in tqdm(range(0, len(order), batch_size), desc=f"floor: embedding {len(texts):,} sentences",
                          unit="batch", leave=False, mininterval=2.0):
            index = order[start:start + batch_size]
            batch = tokenizer([texts[i] for i in index], truncation=True, max_length=max_length, padding=True,
                              return_tensors="pt")
            hidden = encoder(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0), dim=-1)
            out[index] = pooled.numpy()
    return out


# ---- paired comparisons ------------------------------------------------------------------------------------------


def reference_row(name: str, ref: Reference) -> str | None:
    """The row a row is compared with: the previous row of table.yaml, `two-step-pcgrad` for a variant of it
    (`two-step-pcgrad-*`), `pcgrad` for a PCGrad variant (`pcgrad-*`), `multitask` (the plain sum) for any other
    added method."""
    if name in ref.names:
        chain = list(ref.names)
        return chain[chain.index(name) - 1] if chain.index(name) > 0 else None
    for prefix in ("two-step-pcgrad", "pcgrad"):
        if name.startswith(prefix + "-"):
            return prefix
    return "multitask"


def data_labels(data_cfg: TrainConfig) -> dict[str, dict[str, float] | None]:
    """{task: {dev id: label}} of the data every row is scored on."""
    return {s.name: dev_labels(s, data_cfg.resolved_data_dir(), data_cfg.max_eval_samples)
            for s in scored_specs(data_cfg)}


def scored_specs(data_cfg: TrainConfig) -> list[TaskSpec]:
    """The tasks every row is scored on, with their class names when the labels are names."""
    from mtbert.data.loading import resolve_labels

    return [resolve_labels(s, data_cfg.resolved_data_dir()) for s in data_cfg.task_specs()]


def row_predictions(table: dict[str, Row], data_cfg: TrainConfig, labels: dict[str, dict[str, float] | None]
                    ) -> dict[str, dict[str, tuple[TaskSpec, np.ndarray, np.ndarray]]]:
    """{row: dev_triples} of each finished row whose dev prediction files are complete (of the tasks of the data
    that the row predicts)."""
    predictions = {}
    scored = scored_specs(data_cfg)
    for name, row in table.items():
        # a training row's runs (the single-task row has three); the floor and the ensemble write their own files
        folders = [Path(r["run_dir"]) for r in row.runs if "run_dir" in r] or [Path(row.run_dir or "")]
        specs = [s for s in scored
                 if any((f / sub / f"{s.name}-dev-output{s.task_kind.prediction_suffix}").is_file()
                        for f in folders for sub in (PREDICTIONS, "."))]
        if row.done and specs:
            try:
                predictions[name] = dev_triples(folders, specs, labels)
            except MtbertError as err:
                progress(f"  no paired comparison for row {name}: {err}")
    return predictions


def compare_rows(table: dict[str, Row], predictions: dict[str, dict[str, tuple[TaskSpec, np.ndarray, np.ndarray]]],
                 ref: Reference) -> None:
    """Set each finished row's `versus` and `versus_floor`: its overall minus its reference row's (the floor's) on
    the same dev examples, with the paired 95% bootstrap interval of that difference (`bootstrap_difference`).
    A row without complete dev predictions gets no comparison."""
    from mtbert.evaluation.metrics import bootstrap_column_difference, bootstrap_difference, column_value

    def versus(name: str, reference: str | None) -> dict[str, Any] | None:
        if name not in predictions or reference not in predictions:
            return None
        try:
            gap, low, high = bootstrap_difference(predictions[name], predictions[reference])
        except ValueError:  # not the same tasks (a one-task row against a joint row): no overall to compare
            return None
        return {"row": reference, "difference": gap, "ci95": [low, high]}

    def by_column(name: str, reference: str | None) -> dict[str, Any] | None:
        if name not in predictions or reference not in predictions:
            return None
        out = {}
        for column in ref.paired_columns:
            found = bootstrap_column_difference(predictions[name], predictions[reference], column)
            if found is not None:
                out[column] = {"row": reference, "difference": found[0], "ci95": [found[1], found[2]]}
        return out or None

    for name, row in table.items():
        row.versus = versus(name, reference_row(name, ref))
        row.versus_floor = versus(name, "floor") if name != "floor" else None
        row.versus_columns = by_column(name, reference_row(name, ref)) if ref.paired_columns else None
        for column in ref.paired_columns:  # a column the row's runs did not report (one-task runs' frame accuracy)
            if row.done and column not in row.metrics and name in predictions:
                value = column_value(predictions[name], column)
                if value is not None:
                    row.metrics[column] = value


def write_table(output_dir: Path, table: dict[str, Row], budget: float, configs_dir: Path, command: str,
                wall_seconds: float, ref: Reference) -> dict[str, Any]:
    """Write DIR/table.json and DIR/table.md and return the JSON."""
    from mtbert.bench.machine import machine

    unit = budget_unit(configs_dir, budget, ref)
    rows = [table[name] for name in table]
    done = [r for r in rows if r.done]
    digests = None
    if (configs_dir / f"{ref.scored_on}.yaml").is_file():  # the data every row was scored on
        data_cfg = floor_config(output_dir, configs_dir, ref.backbone, ref.scored_on)
        labels = data_labels(data_cfg)
        predictions = row_predictions(table, data_cfg, labels)
        compare_rows(table, predictions, ref)
        for name, triples in predictions.items():
            carried.attach_predictions(table[name].carried, triples)
        digests = {task: carried.ids_digest(list(ids)) for task, ids in labels.items() if ids is not None}
    data = {
        "benchmark": "quality", "command": command, **machine(), "time": datetime.now().isoformat(timespec="seconds"),
        "budget": budget, "samples_per_task_per_stage": unit, "budget_definition": BUDGET_NOTE.format(
            unit=unit or 0, budget=budget),
        "backbone": ref.shown_backbone, "backbone_option": ref.backbone,
        "model_name_or_path": models_used(list(table), configs_dir, ref),
        "reference": {"name": ref.name, "table": ref.table, "about": ref.about, "file": str(ref.path)},
        "columns": {**ref.columns, OVERALL: "Overall"}, "footnote": ref.footnote,
        "paired_columns": list(ref.paired_columns),
        "wall_seconds": round(wall_seconds, 1),
        "rows_wall_seconds": round(sum(r.wall_seconds or 0.0 for r in done), 1),
        "ensemble_members": list(ref.ensemble_members), "dev_ids_sha256": digests,
        "rows": [r.to_dict(ref) for r in rows],
        "row_notes": {name: ref.note(name) for name in table},
    }
    output_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(output_dir / "table.json", data)
    atomic_write_text(output_dir / "table.md", markdown(data))
    return data


def models_used(names: list[str], configs_dir: Path, ref: Reference) -> list[str]:
    """The distinct model_name_or_path of the shown rows' configs (and the floor's), as trained: `--backbone`
    when given."""
    if ref.backbone is not None:
        return [ref.backbone]
    configs = [c for name in names if name != "ensemble" for c in ref.config_names(name)]
    paths = [configs_dir / f"{c}.yaml" for c in configs]
    return sorted({load_config(p).model_name_or_path or BUNDLED for p in paths if p.is_file()})


def budget_unit(configs_dir: Path, budget: float, ref: Reference) -> int | None:
    """Samples per task per stage at this budget, the unit every row shares: that of the folder's `pcgrad.yaml`
    when it has one, else that of the first trained row's first config."""
    names = ["pcgrad", *(c for row in ref.names if row not in BUILT_ROWS for c in ref.config_names(row))]
    path = next((configs_dir / f"{n}.yaml" for n in names if (configs_dir / f"{n}.yaml").is_file()), None)
    if path is None:
        return None
    return stages(planned_config(path, Path("unused"), budget))[0]["samples_per_task"]


def difference_text(versus: dict[str, Any] | None) -> str:
    """`+0.012 (+0.001, +0.023)`: a paired difference and its interval."""
    if not versus:
        return "—"
    return f"{versus['difference']:+.3f} ({versus['ci95'][0]:+.3f}, {versus['ci95'][1]:+.3f})"


def fmt(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def hms(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def source_text(source: dict[str, Any]) -> str:
    """Where a taken row was first written: the table file, its time and machine."""
    return (f"first written to `{source.get('file')}` at {source.get('time')} on {source.get('machine')}"
            f"{cpu_text(source)}, {source.get('cpus')} CPUs, device {source.get('device')}")


def cpu_text(data: dict[str, Any]) -> str:
    """The CPU's model and vector instructions in parentheses, as far as recorded (older tables have neither)."""
    known = [str(data[k]) for k in ("cpu_model", "cpu_capability") if data.get(k)]
    return f" ({', '.join(known)})" if known else ""


def run_dir_text(row: dict[str, Any]) -> str:
    """A row's run folder, and where it was first written when taken from an earlier table."""
    source = row.get("restored_from")
    return f"`{row['run_dir']}`" + (f" (taken: {source_text(source)})" if source else "")


def markdown(data: dict[str, Any]) -> str:
    """The table as markdown: measured numbers, the reference numbers alongside, and how and where they were
    measured."""
    reference = data["reference"]
    keys = list(data["columns"])
    paired = data.get("paired_columns") or []
    headers = list(data["columns"].values())
    models = ", ".join(f"`{m}`" for m in data["model_name_or_path"]) or "—"
    has_floor = any(r["row"] == "floor" for r in data["rows"])  # else no "Δ vs floor" column
    backbone = (f"`{data['backbone']}` (`--backbone`, in place of every row config's model_name_or_path)"
                if data["backbone_option"] else f"{data['backbone']} (the row configs' model_name_or_path: {models})")
    lines = [
        f"# The quality table: {reference['name']}'s {reference['table']}, trained here on {data['backbone']}", "",
        f"- Command: `{data['command']}`",
        f"- Backbone: {backbone}",
        f"- Date: {data['time']}; machine: {data['machine']}{cpu_text(data)}, {data['cpus']} CPUs, "
        f"{data['torch_threads']} torch threads, device {data['device']}, torch {data['torch']}",
        f"- Budget: `--budget {data['budget']:g}`: {data['samples_per_task_per_stage'] or 0:,} training samples "
        "per task of the run in every training stage (details below)",
        f"- Wall time: {hms(data['wall_seconds'])} this call; {hms(data['rows_wall_seconds'])} for all rows "
        "shown, summed over the sittings that trained them",
        "",
        "Dev set numbers. Overall: the mean of the tasks' primary metrics (a correlation r counted as (1 + r) / 2). "
        "CI: the 95% bootstrap interval of overall over dev examples. Δ: overall minus that of "
        f"the row named (the previous row of the table, as `{Path(reference['file']).name}` orders it"
        + ("; `two-step-pcgrad` for a variant of it; `pcgrad` for a PCGrad variant; `multitask` for another method) "
           "or of the frozen-embedding floor" if has_floor else ")")
        + ", with the paired 95% bootstrap interval of the difference (both rows scored "
        "on the same resampled dev examples): an interval that excludes 0 is a difference beyond the dev set's "
        f"noise. Reference: {reference['name']}'s numbers ({reference['about']}), unless a row's note names "
        "another source; — where there are none.",
        "",
        f"| Row | {' | '.join(headers[:-1])} | Overall | 95% CI | Δ overall (paired 95% CI) | "
        + ("Δ vs floor | " if has_floor else "")
        + "".join(f"Δ {data['columns'][c]} (paired 95% CI) | " for c in paired)
        + f"Train s | Wall s | Reference {' / '.join(headers[:-1])} / overall | Run dir |",
        "|---|" + "---|" * (len(keys) + 6 + has_floor + len(paired)),
    ]
    for row in data["rows"]:
        numbers = row["reference"]
        reference_text = " / ".join(fmt(numbers[k]) for k in keys) if numbers else "—"
        name = f"`{row['row']}`"
        if row["status"] != "done":
            lines.append(f"| {name} | {row['status']} |{' |' * (len(keys) + 3 + has_floor + len(paired))} "
                         f"{reference_text} | |")
            continue
        ci = row["overall_ci95"]
        ci_text = f"{ci[0]:.3f}–{ci[1]:.3f}" if ci else "—"
        train, wall = (("—" if row[k] is None else f"{row[k]:,.0f}") for k in ("train_seconds", "wall_seconds"))
        versus, floor = (difference_text(row.get(k)) for k in ("versus", "versus_floor"))
        if row.get("versus"):
            versus += f" vs `{row['versus']['row']}`"
        task_cells = " | ".join(fmt(row[k]) for k in keys[:-1])
        column_cells = "".join(f"{difference_text((row.get('versus_columns') or {}).get(c))} | " for c in paired)
        lines.append(f"| {name} | {task_cells} | "
                     f"**{fmt(row[OVERALL])}** | {ci_text} | {versus} | {floor + ' | ' if has_floor else ''}"
                     f"{column_cells}{train} | {wall} | "
                     f"{reference_text} | {run_dir_text(row)} |")
    lines += ["", "Rows:", ""]
    for row in data["rows"]:
        lines.append(f"- `{row['row']}`: {data['row_notes'][row['row']]}")
    lines += ["", "## Budget", "", data["budget_definition"], "", "| Row | Stage | Steps | Samples per task |",
              "|---|---|---|---|"]
    for row in data["rows"]:
        for stage in row["stages"]:
            samples = ", ".join(f"{t} {n:,}" for t, n in stage["samples"].items())
            label = f"{stage['config']}: {stage['stage']}" if stage["config"] != row["row"] else stage["stage"]
            lines.append(f"| `{row['row']}` | {label} | {stage['steps']:,} | {samples} |")
    lines += ["", "Train s: training seconds of the row's stages, evaluation during training included (the ensemble: "
              "its members' summed; the floor: embedding and fitting). Wall s: the whole row, loading, final "
              f"evaluation and test predictions included. {data['footnote']}".rstrip(), ""]
    return "\n".join(lines)
