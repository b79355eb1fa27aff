"""`mtbert bench quality`: the seed's results table (section 5.4), every row trained here at one compute budget.

Each row is trained from `configs/bench/<name>.yaml` into `DIR/runs/<row>`; a run whose recorded config, data
folder and budget match is reused, so the table can be built over several sittings. The budget is counted in
training samples: every training stage processes `samples_per_task_per_epoch x num_train_epochs` samples per task
of its run (4,096 in the shipped configs) whatever its task ratio, and `--budget X` scales that by X.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from mtbert.config import TrainConfig, load_config, stage2_config
from mtbert.errors import MtbertError
from mtbert.evaluation.ensemble import dev_labels
from mtbert.io import atomic_write_json, atomic_write_text
from mtbert.tasks import TaskSpec, overall_score

MARKER = "bench_run.json"  # written into each run dir: what it was trained with, and how long it took
METRICS = ("sst_acc", "para_acc", "sts_corr", "overall")
# The seed's dev numbers (section 5.4): SST acc, Quora acc, STS corr, overall. The floor is issue 8's measurement.
SEED = {
    "floor": (0.417, 0.776, 0.838, 0.704),
    "single-task": (0.511, 0.787, 0.699, 0.729),
    "multitask": (0.510, 0.885, 0.797, 0.764),
    "pcgrad": (0.506, 0.875, 0.878, 0.773),
    "two-step-pcgrad": (0.510, 0.894, 0.883, 0.782),
    "sw-pcgrad-0-3-1-two-step": (0.528, 0.901, 0.885, 0.790),
    "ensemble": (0.530, 0.904, 0.889, 0.793),
}
SEED_NAMES = {
    "single-task": "Single-task Baseline",
    "multitask": "Multi-task Baseline",
    "pcgrad": "Multi-task PCGrad",
    "two-step-pcgrad": "Two-step Fine-tuning PCGrad",
    "sw-pcgrad-0-3-1-two-step": "Sample-weighted PCGrad",
    "ensemble": "Ensemble",
}
DEFAULT_ROWS = tuple(SEED)
# The configs of each training row; a row not listed here is trained from `<row>.yaml` alone.
ROW_CONFIGS = {"single-task": ("single-sst", "single-para", "single-sts")}
# The ensemble: a vote of the best runs that predict every task (the order breaks Quora ties).
ENSEMBLE_MEMBERS = ("sw-pcgrad-0-3-1-two-step", "two-step-pcgrad", "pcgrad")
ENSEMBLE_MODE = "vote"
NOT_ROWS = {"floor", "ensemble", *(c for configs in ROW_CONFIGS.values() for c in configs)}
BUDGET_NOTE = (
    "Budget: every training stage processes the same number of training samples per task of its run, "
    "`samples_per_task_per_epoch x num_train_epochs` (or `max_steps x per_device_train_batch_size`) "
    "in the configs, {unit:,} at `--budget {budget:g}`. A one-task run's stage processes {unit:,} samples; a "
    "three-task stage processes 3 x {unit:,} whatever its task ratio (sample-weighted 0:3:1 draws 4 batches per "
    "step, so it takes 3/4 of the steps: 0 SST, 2.25 x and 0.75 x {unit:,} Quora and STS samples). Stage 2 of a "
    "two-step row is one single-task stage per task, so a two-step row costs twice a one-stage row. "
    "Forward-backward passes, not optimizer steps, are what is equal; `--budget X` scales every stage's samples by X."
)


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
    versus_floor: dict[str, Any] | None = None  # the same with the floor, which every row must beat (issue 8)

    def to_dict(self) -> dict[str, Any]:
        seed = SEED.get(self.name)
        return {
            "row": self.name, "status": "done" if self.done else (self.note or "not run"),
            **{k: self.metrics.get(k) for k in METRICS}, "overall_ci95": self.overall_ci95,
            "train_seconds": self.train_seconds, "wall_seconds": self.wall_seconds, "run_dir": self.run_dir,
            "reused": self.reused, "members": self.members or None, "runs": self.runs, "stages": self.stages,
            "seed": dict(zip(METRICS, seed, strict=True)) if seed else None, "versus": self.versus,
            "versus_floor": self.versus_floor,
        }


# ---- the command -------------------------------------------------------------------------------------------------


def bench_quality(output_dir: Path, rows: list[str] | None, budget: float, configs_dir: Path) -> dict:
    """Train the asked rows (default: all of the seed's), reusing finished ones, and write table.md and table.json."""
    if not (math.isfinite(budget) and budget > 0):
        raise MtbertError(f"--budget: must be a positive number, not {budget:g}")
    configs_dir = Path(configs_dir)
    if not configs_dir.is_dir():
        raise MtbertError(f"--configs: {configs_dir} is not a folder of row configs")
    output_dir = Path(output_dir)
    asked = resolve_rows(rows, configs_dir)
    command = (f"mtbert bench quality --output_dir {output_dir}" + (f" --rows {','.join(rows)}" if rows else "")
               + f" --budget {budget:g} --configs {configs_dir}")
    started = time.perf_counter()
    shown = table_rows(asked, output_dir, configs_dir)
    table: dict[str, Row] = {}
    for name in shown:
        table[name] = read_row(name, output_dir, configs_dir, budget)
    for name in asked:
        elapsed = time.perf_counter() - started
        table[name] = read_row(name, output_dir, configs_dir, budget)  # again: a member of it may have changed
        if table[name].done:
            progress(f"row {name}: reused from {table[name].run_dir} (elapsed {elapsed:.0f} s)")
            continue
        progress(f"row {name}: running (elapsed {elapsed:.0f} s)")
        row_started = time.perf_counter()
        table[name] = run_row(name, output_dir, configs_dir, budget)
        progress(f"row {name}: done in {time.perf_counter() - row_started:.0f} s, overall "
                 f"{table[name].metrics['overall']:.4f} (elapsed {time.perf_counter() - started:.0f} s)")
        write_table(output_dir, table, budget, configs_dir, command, time.perf_counter() - started)
    for name in shown:
        if name not in asked:  # an ensemble not asked goes stale when a member was trained again
            table[name] = read_row(name, output_dir, configs_dir, budget)
    return write_table(output_dir, table, budget, configs_dir, command, time.perf_counter() - started)


def progress(message: str) -> None:
    print(f"[bench quality] {message}", file=sys.stderr, flush=True)


def resolve_rows(rows: list[str] | None, configs_dir: Path) -> list[str]:
    """The rows to run, in table order, with the ensemble's members added before it."""
    names = [r.strip() for r in (rows if rows is not None else DEFAULT_ROWS) if r.strip()]
    if not names:
        raise MtbertError("--rows: name at least one row")
    known = known_rows(configs_dir)
    for name in names:
        if name not in known:
            raise MtbertError(f"--rows: unknown row '{name}' (rows: {', '.join(known)})")
    if "ensemble" in names:
        names += [m for m in ENSEMBLE_MEMBERS if m not in names]
    return [r for r in known if r in names]


def known_rows(configs_dir: Path) -> list[str]:
    """The seed's rows, then one row per other config in the folder."""
    extra = sorted(p.stem for p in configs_dir.glob("*.yaml") if p.stem not in SEED and p.stem not in NOT_ROWS)
    return [*DEFAULT_ROWS, *extra]


def table_rows(asked: list[str], output_dir: Path, configs_dir: Path) -> list[str]:
    """Rows the table shows: the seed's, plus any other row asked now or with a run dir in the output folder."""
    return [r for r in known_rows(configs_dir)
            if r in SEED or r in asked or (output_dir / "runs" / r / MARKER).is_file()]


def config_names(row: str) -> tuple[str, ...]:
    return ROW_CONFIGS.get(row, (row,))


def run_dir_of(output_dir: Path, row: str, config: str) -> Path:
    return output_dir / "runs" / row / config if row in ROW_CONFIGS else output_dir / "runs" / row


# ---- configs and the budget --------------------------------------------------------------------------------------


def planned_config(path: Path, run_dir: Path, budget: float) -> TrainConfig:
    """A row config with its output dir set and every stage's training samples scaled by `budget`."""
    if not path.is_file():
        raise MtbertError(f"{path}: config of a bench row not found")
    cfg = load_config(path, {"output_dir": str(run_dir)})
    return load_config(path, {"output_dir": str(run_dir), **scaled(cfg.to_dict(), cfg.per_device_train_batch_size,
                                                                   budget)})


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
    if not (cfg.two_step or {}).get("init_from"):
        out.append(one("stage 1" if cfg.two_step else "train", cfg, cfg.ratios()))
    if cfg.two_step is not None:
        stage2 = stage2_config(cfg)
        out += [one(f"stage 2 {spec.name}", stage2, {spec.name: 1}) for spec in cfg.task_specs()]
    if cfg.mlm_steps and not (cfg.two_step or {}).get("init_from"):  # before stage 1; listed last
        sentences = cfg.mlm_steps * cfg.per_device_train_batch_size
        out.append({"stage": "masked-LM", "steps": cfg.mlm_steps, "samples": {"training sentences": sentences},
                    "samples_per_task": round(sentences / len(cfg.task_specs()))})
    return out


def signature(cfg: TrainConfig, budget: float) -> dict[str, Any]:
    """What decides a run's results: its config (but not where it is), its data folder and the budget."""
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


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# ---- training rows -----------------------------------------------------------------------------------------------


def read_row(name: str, output_dir: Path, configs_dir: Path, budget: float) -> Row:
    """The row as finished in the output folder, or not done when any of its runs is missing or stale."""
    if name == "ensemble":
        unfinished = [m for m in ENSEMBLE_MEMBERS if not read_row(m, output_dir, configs_dir, budget).done]
        if unfinished:
            return Row(name, note=f"not run (member {', '.join(unfinished)} not finished at this budget)")
        return read_ensemble(output_dir)
    if name == "floor":
        return read_floor(output_dir, configs_dir)
    runs = []
    for config in config_names(name):
        path = configs_dir / f"{config}.yaml"
        run_dir = run_dir_of(output_dir, name, config)
        if not path.is_file():
            return Row(name, note=f"no config {path}")
        cfg = planned_config(path, run_dir, budget)
        marker = read_json(run_dir / MARKER)
        results = read_json(run_dir / "results.json")
        if marker is None or results is None or marker.get("wall_seconds") is None:
            return Row(name)
        if not same_signature(marker.get("signature"), signature(cfg, budget)):
            return Row(name, note="stale (config, data or budget changed)")
        runs.append((config, cfg, run_dir, results, marker))
    return training_row(name, output_dir, runs, reused=True)


def run_row(name: str, output_dir: Path, configs_dir: Path, budget: float) -> Row:
    """Train (or resume, or reuse) every run of a row and read the row back."""
    if name == "ensemble":
        return run_ensemble_row(output_dir)
    if name == "floor":
        return run_floor(output_dir, configs_dir)
    runs = []
    for config in config_names(name):
        run_dir = run_dir_of(output_dir, name, config)
        cfg = planned_config(configs_dir / f"{config}.yaml", run_dir, budget)
        runs.append((config, cfg, run_dir, *train_run(cfg, run_dir, budget)))
    return training_row(name, output_dir, runs, reused=False)


def train_run(cfg: TrainConfig, run_dir: Path, budget: float) -> tuple[dict[str, Any], dict[str, Any]]:
    """Reuse a finished run with this signature, resume an unfinished one, else train it afresh."""
    import mtbert.training.run

    wanted = signature(cfg, budget)
    marker = read_json(run_dir / MARKER)
    results = read_json(run_dir / "results.json")
    started = marker is not None and same_signature(marker.get("signature"), wanted)
    if started and results is not None and marker.get("wall_seconds") is not None:
        return results, marker
    resume = None
    if started and (cfg.two_step is not None or any(run_dir.glob("checkpoint-*"))):
        resume = "last"  # a two-step run also skips its finished stages
    earlier = float(marker.get("wall_seconds_before", 0.0)) if started and resume else 0.0
    marker = {"signature": wanted, "stages": stages(cfg), "wall_seconds": None, "wall_seconds_before": earlier}
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run_dir / MARKER, marker)
    plan = ", ".join(f"{s['stage']}: {s['steps']} steps" for s in marker["stages"])
    progress(f"  training {run_dir} ({plan})" + (" (resumed)" if resume else ""))
    clock = time.perf_counter()
    try:
        results = mtbert.training.run.train(cfg, resume_from_checkpoint=resume, overwrite_output_dir=True)
    finally:
        marker["wall_seconds_before"] = round(earlier + time.perf_counter() - clock, 1)
        atomic_write_json(run_dir / MARKER, marker)
    marker["wall_seconds"] = marker["wall_seconds_before"]
    atomic_write_json(run_dir / MARKER, marker)
    return results, marker


def training_row(name: str, output_dir: Path, runs: list[tuple], reused: bool) -> Row:
    """A row from its runs' results.json: one run as is; several one-task runs combined (single-task)."""
    specs: list[TaskSpec] = []
    metrics: dict[str, float] = {}
    infos = []
    for config, cfg, run_dir, results, marker in runs:
        for spec in cfg.task_specs():
            if spec.metric_key in results:
                specs.append(spec)
                metrics[spec.metric_key] = float(results[spec.metric_key])
        infos.append({"config": config, "run_dir": str(run_dir), "train_seconds": results.get("train_seconds"),
                      "wall_seconds": marker.get("wall_seconds"),
                      **{k: results[k] for k in (*METRICS, "overall_ci95") if k in results}})
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
    )


def combined_interval(runs: list[tuple[TrainConfig, Path]]) -> tuple[float, float]:
    """The overall score's bootstrap interval over the combined dev predictions of one-task runs."""
    from mtbert.evaluation.metrics import bootstrap_overall

    specs = [spec for cfg, _ in runs for spec in cfg.task_specs()]
    labels = {spec.name: dev_labels(spec, cfg.resolved_data_dir(), cfg.max_eval_samples)
              for cfg, _ in runs for spec in cfg.task_specs()}
    return bootstrap_overall(dev_triples([run_dir for _, run_dir in runs], specs, labels))


def dev_triples(folders: list[Path], specs: list[TaskSpec],
                labels: dict[str, dict[str, float] | None]) -> dict[str, tuple[TaskSpec, np.ndarray, np.ndarray]]:
    """{task: (spec, dev predictions, labels)} from the CS224N dev files in `folders` (in a run's `predictions/`
    or, for an ensemble, the folder itself); MtbertError when a task has no labels, no file or missing ids."""
    from mtbert.evaluation.predict import read_cs224n

    triples = {}
    for spec in specs:
        files = [f / sub / f"{spec.name}-dev-output.csv" for f in folders for sub in ("predictions", ".")]
        found = [f for f in files if f.is_file()]
        task_labels = labels.get(spec.name)
        if task_labels is None:
            raise MtbertError(f"{folders[0]}: no dev labels for task {spec.name}")
        if not found:
            raise MtbertError(f"{folders[0]}: no {spec.name}-dev-output.csv")
        _, values = read_cs224n(found[0])
        missing = [i for i in task_labels if i not in values]
        if missing:
            raise MtbertError(f"{found[0]}: {len(missing)} dev ids of task {spec.name} have no prediction")
        triples[spec.name] = (spec, np.array([values[i] for i in task_labels]), np.array(list(task_labels.values())))
    return triples


# ---- the ensemble ------------------------------------------------------------------------------------------------


def member_dirs(output_dir: Path) -> list[Path]:
    return [output_dir / "runs" / m for m in ENSEMBLE_MEMBERS]


def ensemble_signature(output_dir: Path) -> dict[str, Any] | None:
    """The members' prediction files (hashed): the ensemble is stale when any of them changed."""
    hashes = {}
    for member in member_dirs(output_dir):
        if not (member / "results.json").is_file():
            return None
        digest = hashlib.sha256()
        for path in sorted((member / "predictions").glob("*.csv")):
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
        hashes[member.name] = digest.hexdigest()
    return {"mode": ENSEMBLE_MODE, "members": hashes}


def read_ensemble(output_dir: Path) -> Row:
    run_dir = output_dir / "runs" / "ensemble"
    marker, results = read_json(run_dir / MARKER), read_json(run_dir / "results.json")
    wanted = ensemble_signature(output_dir)
    if marker is None or results is None or wanted is None:
        return Row("ensemble")
    if not same(marker.get("signature"), wanted):
        return Row("ensemble", note="stale (a member changed)")
    return ensemble_row(output_dir, results, marker, reused=True)


def run_ensemble_row(output_dir: Path) -> Row:
    """Vote the members' predictions with `mtbert.evaluation.ensemble.run_ensemble` into DIR/runs/ensemble."""
    from mtbert.evaluation.ensemble import run_ensemble

    members = member_dirs(output_dir)
    wanted = ensemble_signature(output_dir)
    if wanted is None:
        raise MtbertError(f"ensemble: its members ({', '.join(ENSEMBLE_MEMBERS)}) must be finished first")
    run_dir = output_dir / "runs" / "ensemble"
    clock = time.perf_counter()
    results = run_ensemble(members, run_dir, ENSEMBLE_MODE)
    marker = {"signature": wanted, "wall_seconds": round(time.perf_counter() - clock, 1)}
    atomic_write_json(run_dir / MARKER, marker)
    return ensemble_row(output_dir, results, marker, reused=False)


def ensemble_row(output_dir: Path, results: dict[str, Any], marker: dict[str, Any], reused: bool) -> Row:
    metrics = results.get("ensemble", {})
    member_results = [read_json(m / "results.json") or {} for m in member_dirs(output_dir)]
    return Row(
        "ensemble", done=True, metrics={k: float(metrics[k]) for k in METRICS if k in metrics},
        overall_ci95=metrics.get("overall_ci95"),
        train_seconds=round(sum(float(r.get("train_seconds") or 0.0) for r in member_results), 1),
        wall_seconds=marker.get("wall_seconds"), run_dir=str(output_dir / "runs" / "ensemble"),
        members=list(ENSEMBLE_MEMBERS), reused=reused,
        runs=[{"member": m, **{k: r.get(k) for k in METRICS}}
              for m, r in zip(ENSEMBLE_MEMBERS, results.get("member_metrics", []), strict=False)],
    )


# ---- the floor: frozen embeddings, no fine-tuning ----------------------------------------------------------------


def floor_signature(cfg: TrainConfig) -> dict[str, Any]:
    keys = ("model_name_or_path", "tasks", "max_length", "max_train_samples", "max_eval_samples")
    return {"config": {k: getattr(cfg, k) for k in keys}, "data_dir": str(cfg.resolved_data_dir().resolve())}


def floor_config(output_dir: Path, configs_dir: Path) -> TrainConfig:
    path = configs_dir / "floor.yaml"
    if not path.is_file():
        raise MtbertError(f"{path}: config of the floor row not found")
    return load_config(path, {"output_dir": str(output_dir / "runs" / "floor")})


def read_floor(output_dir: Path, configs_dir: Path) -> Row:
    if not (configs_dir / "floor.yaml").is_file():
        return Row("floor", note=f"no config {configs_dir / 'floor.yaml'}")
    cfg = floor_config(output_dir, configs_dir)
    run_dir = Path(cfg.output_dir)
    marker, results = read_json(run_dir / MARKER), read_json(run_dir / "results.json")
    if marker is None or results is None:
        return Row("floor")
    if not same(marker.get("signature"), floor_signature(cfg)):
        return Row("floor", note="stale (config or data changed)")
    return floor_row(run_dir, results, marker, reused=True)


def run_floor(output_dir: Path, configs_dir: Path) -> Row:
    cfg = floor_config(output_dir, configs_dir)
    run_dir = Path(cfg.output_dir)
    clock = time.perf_counter()
    results = floor_results(cfg, run_dir)
    marker = {"signature": floor_signature(cfg), "wall_seconds": round(time.perf_counter() - clock, 1)}
    atomic_write_json(run_dir / MARKER, marker)
    return floor_row(run_dir, results, marker, reused=False)


def floor_row(run_dir: Path, results: dict[str, Any], marker: dict[str, Any], reused: bool) -> Row:
    return Row("floor", done=True, metrics={k: float(results[k]) for k in METRICS if k in results},
               overall_ci95=results.get("overall_ci95"), train_seconds=results.get("train_seconds"),
               wall_seconds=marker.get("wall_seconds"), run_dir=str(run_dir), reused=reused)


def floor_results(cfg: TrainConfig, run_dir: Path) -> dict[str, Any]:
    """Dev metrics of frozen mean-pooled embeddings: logistic regression (one-sentence classification), a cosine
    threshold fitted on train (pair classification), the cosine rescaled to the label range (pair regression)."""
    from sklearn.linear_model import LogisticRegression

    from mtbert.data import read_task_file
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
            examples[spec.name, split] = read_task_file(data_dir / name, spec).examples[:limit]
    texts = sorted({t for rows in examples.values() for e in rows for t in e.texts})
    vectors = dict(zip(texts, embed(encoder, tokenizer, texts, cfg.max_length, cfg.per_device_eval_batch_size),
                       strict=True))
    results = {}
    for spec in cfg.task_specs():
        train, dev = examples[spec.name, "train"], examples[spec.name, "dev"]
        y_train = np.array([e.label for e in train])
        if spec.is_pair:
            x_train, x_dev = cosines(train, vectors), cosines(dev, vectors)
            if spec.is_regression:
                predictions = spec.label_min + (spec.label_max - spec.label_min) * (1 + x_dev) / 2
            else:
                predictions = (x_dev > best_threshold(x_train, y_train)).astype(float)
        else:
            x_train = np.stack([vectors[e.texts[0]] for e in train])
            x_dev = np.stack([vectors[e.texts[0]] for e in dev])
            model = LogisticRegression(max_iter=2000).fit(x_train, y_train.astype(int))
            predictions = model.predict(x_dev).astype(float)
        write_cs224n(run_dir / "predictions" / f"{spec.name}-dev-output.csv", spec, [e.id for e in dev], predictions)
        results[spec.name] = (spec, predictions, np.array([e.label for e in dev]))
    metrics: dict[str, Any] = compute_metrics(results)
    metrics["overall_ci95"] = list(bootstrap_overall(results))
    metrics["train_seconds"] = round(time.perf_counter() - clock, 1)
    atomic_write_json(run_dir / "results.json", metrics)
    return metrics


def embed(encoder, tokenizer, texts: list[str], max_length: int, batch_size: int) -> np.ndarray:
    """L2-normalised masked-mean embeddings (as sentence-transformers pools all-MiniLM-L6-v2), shortest first."""
    import torch

    encoder.eval()
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = np.zeros((len(texts), encoder.config.hidden_size), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            index = order[start:start + batch_size]
            batch = tokenizer([texts[i] for i in index], truncation=True, max_length=max_length, padding=True,
                              return_tensors="pt")
            hidden = encoder(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0), dim=-1)
            out[index] = pooled.numpy()
    return out


def cosines(rows: list, vectors: dict[str, np.ndarray]) -> np.ndarray:
    return np.array([float(vectors[e.texts[0]] @ vectors[e.texts[1]]) for e in rows])


def best_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """The cosine threshold (predict 1 above it) with the best training accuracy, midway between two scores."""
    order = np.argsort(scores)
    s, y = scores[order], labels[order].astype(int)
    # predicting 1 for everything above position k: correct = zeros at or below k + ones above k
    correct = np.concatenate([[y.sum()], np.cumsum(1 - y) + (y.sum() - np.cumsum(y))])
    k = int(np.argmax(correct))
    if k == 0:
        return float(s[0]) - 1.0
    if k == len(s):
        return float(s[-1])
    return float((s[k - 1] + s[k]) / 2)


# ---- the table ---------------------------------------------------------------------------------------------------


# ---- paired comparisons ------------------------------------------------------------------------------------------


def reference_row(name: str) -> str | None:
    """The row a row is compared with: the previous row of the seed's chain, `two-step-pcgrad` for a variant of it
    (`two-step-pcgrad-*`), `pcgrad` for a PCGrad variant (`pcgrad-*`), `multitask` (the plain sum) for any other
    added method."""
    if name in SEED:
        chain = list(SEED)
        return chain[chain.index(name) - 1] if chain.index(name) > 0 else None
    for prefix in ("two-step-pcgrad", "pcgrad"):
        if name.startswith(prefix + "-"):
            return prefix
    return "multitask"


def compare_rows(table: dict[str, Row], data_cfg: TrainConfig) -> None:
    """Set each finished row's `versus` and `versus_floor`: its overall minus its reference row's (the floor's) on
    the same dev examples, with the paired 95% bootstrap interval of that difference (`bootstrap_difference`).
    A row whose dev prediction files are incomplete gets no comparison."""
    from mtbert.evaluation.metrics import bootstrap_difference

    specs = data_cfg.task_specs()
    labels = {s.name: dev_labels(s, data_cfg.resolved_data_dir(), data_cfg.max_eval_samples) for s in specs}
    predictions = {}
    for name, row in table.items():
        # a training row's runs (the single-task row has three); the floor and the ensemble write their own files
        folders = [Path(r["run_dir"]) for r in row.runs if "run_dir" in r] or [Path(row.run_dir or "")]
        if row.done:
            try:
                predictions[name] = dev_triples(folders, specs, labels)
            except MtbertError as err:
                progress(f"  no paired comparison for row {name}: {err}")

    def versus(name: str, reference: str | None) -> dict[str, Any] | None:
        if name not in predictions or reference not in predictions:
            return None
        gap, low, high = bootstrap_difference(predictions[name], predictions[reference])
        return {"row": reference, "difference": gap, "ci95": [low, high]}

    for name, row in table.items():
        row.versus = versus(name, reference_row(name))
        row.versus_floor = versus(name, "floor") if name != "floor" else None


def write_table(output_dir: Path, table: dict[str, Row], budget: float, configs_dir: Path, command: str,
                wall_seconds: float) -> dict[str, Any]:
    """Write DIR/table.json and DIR/table.md and return the JSON."""
    from mtbert.bench.step import machine

    unit = budget_unit(configs_dir, budget)
    rows = [table[name] for name in table]
    done = [r for r in rows if r.done]
    if (configs_dir / "floor.yaml").is_file():  # the data every row was scored on
        compare_rows(table, floor_config(output_dir, configs_dir))
    data = {
        "benchmark": "quality", "command": command, **machine(), "time": datetime.now().isoformat(timespec="seconds"),
        "budget": budget, "samples_per_task_per_stage": unit, "budget_definition": BUDGET_NOTE.format(
            unit=unit or 0, budget=budget),
        "wall_seconds": round(wall_seconds, 1),
        "rows_wall_seconds": round(sum(r.wall_seconds or 0.0 for r in done), 1),
        "ensemble_members": list(ENSEMBLE_MEMBERS), "rows": [r.to_dict() for r in rows],
    }
    output_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(output_dir / "table.json", data)
    atomic_write_text(output_dir / "table.md", markdown(data))
    return data


def budget_unit(configs_dir: Path, budget: float) -> int | None:
    """Samples per task per stage of the pcgrad config at this budget (the unit every row shares)."""
    path = configs_dir / "pcgrad.yaml"
    if not path.is_file():
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


def markdown(data: dict[str, Any]) -> str:
    """The table as markdown: measured numbers, the seed's alongside, and how and where they were measured."""
    lines = [
        "# Quality: the seed's results table (section 5.4) on this machine", "",
        f"- Command: `{data['command']}`",
        f"- Date: {data['time']}; machine: {data['machine']}, {data['cpus']} CPUs, {data['torch_threads']} torch "
        f"threads, device {data['device']}, torch {data['torch']}",
        f"- Budget: `--budget {data['budget']:g}`: {data['samples_per_task_per_stage'] or 0:,} training samples "
        "per task of the run in every training stage (details below)",
        f"- Wall time: {hms(data['wall_seconds'])} this call; {hms(data['rows_wall_seconds'])} for all rows "
        "shown, summed over the sittings that trained them",
        "",
        "Dev set numbers. CI: the 95% bootstrap interval of overall over dev examples. Δ: overall minus that of "
        "the row named (the previous row of the seed's table; `two-step-pcgrad` for a variant of it; `pcgrad` "
        "for a PCGrad variant; `multitask` for another method) or of the floor, with the paired 95% bootstrap "
        "interval of the difference (both rows scored on the same resampled dev examples): an interval that "
        "excludes 0 is a difference beyond the dev set's noise. Seed: "
        "the report's numbers (BERT-base on a GPU, the course's 141k-pair Quora train set); the floor's are issue "
        "8's measurement.",
        "",
        "| Row | SST acc | Quora acc | STS corr | Overall | 95% CI | Δ overall (paired 95% CI) | Δ vs floor | "
        "Train s | Wall s | Seed SST / Quora / STS / overall | Run dir |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in data["rows"]:
        seed = row["seed"]
        seed_text = " / ".join(fmt(seed[k]) for k in METRICS) if seed else "—"
        name = f"`{row['row']}`"
        if row["status"] != "done":
            lines.append(f"| {name} | {row['status']} | | | | | | | | | {seed_text} | |")
            continue
        ci = row["overall_ci95"]
        ci_text = f"{ci[0]:.3f}–{ci[1]:.3f}" if ci else "—"
        train, wall = (("—" if row[k] is None else f"{row[k]:,.0f}") for k in ("train_seconds", "wall_seconds"))
        versus, floor = (difference_text(row.get(k)) for k in ("versus", "versus_floor"))
        if row.get("versus"):
            versus += f" vs `{row['versus']['row']}`"
        lines.append(f"| {name} | {fmt(row['sst_acc'])} | {fmt(row['para_acc'])} | {fmt(row['sts_corr'])} | "
                     f"**{fmt(row['overall'])}** | {ci_text} | {versus} | {floor} | {train} | {wall} | {seed_text} | "
                     f"`{row['run_dir']}` |")
    lines += ["", "Rows:", ""]
    for row in data["rows"]:
        lines.append(f"- `{row['row']}`: {row_note(row['row'], data)}")
    lines += ["", "## Budget", "", data["budget_definition"], "", "| Row | Stage | Steps | Samples per task |",
              "|---|---|---|---|"]
    for row in data["rows"]:
        for stage in row["stages"]:
            samples = ", ".join(f"{t} {n:,}" for t, n in stage["samples"].items())
            label = f"{stage['config']}: {stage['stage']}" if stage["config"] != row["row"] else stage["stage"]
            lines.append(f"| `{row['row']}` | {label} | {stage['steps']:,} | {samples} |")
    lines += ["", "Train s: training seconds of the row's stages, evaluation during training included (the ensemble: "
              "its members' summed; the floor: embedding and fitting). Wall s: the whole row, loading, final "
              "evaluation and test predictions included. Quora numbers here come from a 14k-pair training split "
              "and are not comparable one-to-one with the seed's.", ""]
    return "\n".join(lines)


def row_note(name: str, data: dict[str, Any]) -> str:
    seed = SEED_NAMES.get(name)
    text = {
        "floor": "no fine-tuning: frozen mean-pooled all-MiniLM-L6-v2 embeddings, logistic regression (SST), a "
                 "cosine threshold fitted on train (Quora), the cosine (STS)",
        "single-task": "three one-task runs (`single-sst`, `single-para`, `single-sts`) read as one row; its CI "
                       "resamples their combined dev predictions",
        "multitask": "the sum of the three task losses",
        "pcgrad": "PCGrad on the three tasks",
        "two-step-pcgrad": "PCGrad, then each task fine-tuned alone from stage 1's best encoder with a fresh head",
        "sw-pcgrad-0-3-1-two-step": "sample-weighted PCGrad with 0:3:1 batches of SST:Quora:STS, then two-step",
        "ensemble": f"{ENSEMBLE_MODE} of {', '.join(f'`{m}`' for m in data['ensemble_members'])} (the seed's rules: "
                    "SST mean class rounded, Quora majority, STS mean)",
    }.get(name, f"extra row trained from `{name}.yaml`")
    if name == "floor":
        return f"{text} (reference numbers: issue 8's measurement of this floor)"
    return text + (f" (seed: {seed})" if seed else "")
