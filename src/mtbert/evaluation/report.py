"""`mtbert report`: a markdown results table and PNG plots (dev curves, stage 2, gradient conflicts) of finished runs.

Plots are drawn on `matplotlib.figure.Figure` objects (the Agg canvas), never through pyplot, so building a
report touches no global matplotlib state.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter, PercentFormatter

from mtbert import kinds
from mtbert.config import TrainConfig
from mtbert.errors import MtbertError
from mtbert.evaluation.finished import load_run_config
from mtbert.io import atomic_write_bytes, atomic_write_text, read_jsonl, write_error
from mtbert.io import read_json as json_object
from mtbert.runs.layout import BENCH_RUN, METRICS, RESULTS, STAGE1, RunDir
from mtbert.runs.output import claim_output_dir
from mtbert.tasks import TaskSpec

DPI = 150
# Okabe-Ito, reordered so that the first six are the most distinct on white (yellow last).
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#56B4E9", "#CC79A7", "#000000", "#F0E442")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
STAGE1_STYLE = "-"
STAGE2_STYLE = "--"
TITLE = "# mtbert report"
PLOTS = ("overall.png", "tasks.png", "stage2.png", "conflicts.png")


@dataclass
class Run:
    """What the report reads from one run folder."""

    name: str
    path: Path
    cfg: TrainConfig
    results: dict[str, Any]
    history: list[dict[str, Any]]  # dev evaluations of the multi-task stage (stage 1 of a two-step run)
    stage2: list[dict[str, Any]] = field(default_factory=list)  # top-level per-epoch lines of a two-step run
    stage2_tasks: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # tasks/<task>/metrics.jsonl
    stage1_results: dict[str, Any] = field(default_factory=dict)  # stage1/results.json, when there is one
    train_log: list[dict[str, Any]] = field(default_factory=list)
    taken_from: str = ""  # the table a `bench quality --from_table` run was taken from (no curves, no logs)
    color: str = PALETTE[0]
    marker: str = MARKERS[0]

    @property
    def two_step(self) -> bool:
        return self.cfg.two_step is not None

    @property
    def specs(self) -> list[TaskSpec]:
        return self.cfg.task_specs()

    def stage2_offset(self) -> float:
        """Epoch at which stage 2 starts on the shared axis: the last stage-1 evaluation (0 without stage 1)."""
        return float(self.history[-1]["epoch"]) if self.history else 0.0


# ---- reading runs --------------------------------------------------------------------------------


def build_report(run_dirs: list[Path], output_dir: Path) -> Path:
    """Write `output_dir/report.md` and its PNG plots for the given run folders; return the report's path."""
    if not run_dirs:
        raise MtbertError("report: give at least one run folder")
    runs = [load_run(Path(d)) for d in run_dirs]
    for index, (run, name) in enumerate(zip(runs, unique_names([r.path for r in runs]), strict=True)):
        run.name = name
        run.color = PALETTE[index % len(PALETTE)]
        run.marker = MARKERS[(index + index // len(PALETTE)) % len(MARKERS)]
    output_dir = Path(output_dir)
    claim_output_dir(output_dir, "report", "--output_dir", is_report_output)
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise write_error(output_dir, err) from None
    for name in PLOTS:  # never leave a plot of an earlier report that this one does not link
        (output_dir / name).unlink(missing_ok=True)
    versus = versus_first(runs)

    sections = [TITLE + "\n\n" + "\n".join(f"- `{r.name}`: {r.path}" for r in runs) + "\n",
                "## Dev results\n\n" + results_table(runs, versus) + "\n\n" + table_notes(runs, versus) + "\n"]
    skipped = plot_overall(runs, output_dir / "overall.png")
    sections.append(figure_md("Overall dev score", "overall.png",
                              "Overall dev score per epoch; for two-step runs stage 1 (solid) continues into "
                              "stage 2 (dashed) after the dotted line.", skipped))
    plot_tasks(runs, output_dir / "tasks.png")
    sections.append(figure_md("Dev metric of each task", "tasks.png",
                              "Each task's dev metric per epoch (stage 2 dashed, per-task specialised models)."))
    if any(r.stage2_tasks for r in runs):
        plot_stage2(runs, output_dir / "stage2.png")
        sections.append(figure_md("Stage 2: per-task fine-tuning", "stage2.png",
                                  "Dev metric of each task's specialised model per stage-2 epoch; dotted: the task's "
                                  "score of the stage-1 best model, whose encoder stage 2 starts from (with a new "
                                  "head)."))
    logged = [r for r in runs if any("cosine" in rec for rec in r.train_log)]
    if logged:
        window = plot_conflicts(logged, output_dir / "conflicts.png")
        sections.append(figure_md("Gradient conflicts", "conflicts.png",
                                  f"Cosine similarity and conflict rate (share of steps with cosine < 0) of each task "
                                  f"pair's shared-encoder gradients, and each task's gradient norm; rolling mean over "
                                  f"{plural(window, 'logged step')}, raw cosine faint."))
    path = output_dir / "report.md"
    atomic_write_text(path, "\n".join(sections))
    return path


def is_report_output(folder: Path) -> bool:
    """Whether `folder` holds an earlier report: only report.md (the report's, by its title) and the plots."""
    names = {p.name for p in Path(folder).iterdir()}
    if not names <= {"report.md", *PLOTS}:
        return False
    try:
        with open(Path(folder) / "report.md", encoding="utf-8") as handle:
            return handle.read(len(TITLE)) == TITLE
    except FileNotFoundError:
        return True  # only plots: a report stopped before its report.md
    except (OSError, UnicodeDecodeError):
        return False


def load_run(run_dir: Path) -> Run:
    """Read one finished run folder; a missing or unreadable file raises MtbertError naming it."""
    if not run_dir.is_dir():
        raise MtbertError(f"{run_dir}: not a run folder (no such folder)")
    cfg = load_run_config(run_dir)
    results = read_json(run_dir, RESULTS)
    taken = taken_from(run_dir)
    if taken:
        return Run(name=run_dir.name, path=run_dir, cfg=cfg, results=results, history=[], taken_from=taken)
    history = read_required_jsonl(run_dir, METRICS)
    run = Run(name=run_dir.name, path=run_dir, cfg=cfg, results=results, history=dev_lines(history))
    if cfg.two_step is None:
        run.train_log = gradient_lines(read_jsonl(RunDir(run_dir).train_log))
        return run
    run.stage2 = run.history
    stage1 = RunDir(run_dir).stage1
    if stage1.root.is_dir():
        run.stage1_results = read_json(run_dir, f"{STAGE1}/{RESULTS}")
        run.history = dev_lines(read_required_jsonl(run_dir, f"{STAGE1}/{METRICS}"))
        run.train_log = gradient_lines(read_jsonl(stage1.train_log))
    else:  # two_step.init_from: stage 1 was another run
        run.history = []
    for spec in run.specs:
        lines = read_required_jsonl(run_dir, f"tasks/{spec.name}/metrics.jsonl", "a finished two-step run")
        run.stage2_tasks[spec.name] = dev_lines(lines)
    return run


def taken_from(run_dir: Path) -> str:
    """The table file a run was taken from by `mtbert bench quality --from_table` (a folder with results and dev
    predictions but no metrics.jsonl), or "" for a run trained in its folder."""
    if (run_dir / METRICS).is_file():
        return ""
    source = (json_object(run_dir / BENCH_RUN) or {}).get("restored_from")
    return str(source.get("file") or "an earlier table") if isinstance(source, dict) else ""


def read_json(run_dir: Path, name: str) -> dict[str, Any]:
    path = run_dir / name
    if not path.is_file():
        raise MtbertError(f"{run_dir}: not a finished run ({name} is missing)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise MtbertError(f"{path}: not valid JSON") from None
    if not isinstance(data, dict) or "overall" not in data:
        raise MtbertError(f"{path}: has no overall score (not a results file of mtbert train)")
    return data


def read_required_jsonl(run_dir: Path, name: str, what: str = "a finished run") -> list[dict[str, Any]]:
    """The records of a finished run's log; a line that is not a JSON object (but a last line torn by a crash), or
    a log without one dev evaluation, is one MtbertError naming the file (and line)."""
    path = run_dir / name
    if not path.is_file():
        raise MtbertError(f"{run_dir}: not {what} ({name} is missing)")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise MtbertError(f"{path}: cannot be read ({err.strerror or err})") from None
    records = []
    lines = data.splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
            record = None
        if record is None and number == len(lines) and not data.endswith(b"\n"):
            continue  # a last line torn by a crash
        if not isinstance(record, dict):
            raise MtbertError(f"{path}, line {number}: not a JSON record of mtbert train (the file is damaged)")
        records.append(record)
    if not dev_lines(records):
        raise MtbertError(f"{path}: holds no dev evaluation (a record with a numeric epoch), so it is not the log "
                          "of a finished run")
    return records


def dev_lines(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The dev evaluations of a metrics.jsonl, in epoch order."""
    keep = [r for r in lines if r.get("split", "dev") == "dev" and finite(r.get("epoch"))]
    return sorted(keep, key=lambda r: r["epoch"])


def finite(value: Any) -> bool:
    """A finite number (not a bool)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def gradient_lines(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The train_log lines the conflict plot can draw: a finite step, finite cosines (and grad norms, conflicts)."""
    keep = []
    for record in lines:
        cosine, norms, conflict = record.get("cosine"), record.get("grad_norm", {}), record.get("conflict", {})
        if not (finite(record.get("step")) and isinstance(cosine, dict) and cosine and isinstance(norms, dict)
                and isinstance(conflict, dict)):
            continue
        if all(finite(v) for v in cosine.values()) and all(finite(v) for v in norms.values()):
            keep.append(record)
    return keep


def unique_names(paths: list[Path]) -> list[str]:
    """Folder names, lengthened with parent folders (then numbered) where two runs would share a name."""
    names = [p.name or str(p) for p in paths]
    for depth in (2, 3):
        clash = {n for n in names if names.count(n) > 1}
        names = ["/".join(p.parts[-depth:]) if n in clash else n for n, p in zip(names, paths, strict=True)]
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if names.count(n) == 1 else f"{n} #{seen[n]}")
    return out


# ---- the table -----------------------------------------------------------------------------------

TABLE_NOTE = ("Dev metrics of each run's best model (`results.json`; two-step runs: each task's specialised "
              "model). Overall = mean of the task scores, a correlation r counting as (1 + r) / 2; "
              "95% CI: bootstrap interval of the overall score; train time as h:mm:ss.")
VERSUS_NOTE = ("Δ vs first run: the run's overall minus the first run's, both scored from their dev prediction files "
               "(`predictions/`) on the same dev examples, with the paired 95% bootstrap interval of that difference "
               "(1,000 resamples of the dev examples, each scoring both runs): an interval that leaves out 0 is a "
               "difference beyond the dev set's noise.")


@dataclass
class Versus:
    """A run's paired comparison with the first run: the difference and its interval, or why there is none."""

    difference: float | None = None
    ci95: tuple[float, float] | None = None
    missing: str = ""  # why there is no comparison (one phrase)

    def cell(self) -> str:
        if self.difference is None or self.ci95 is None:
            return "–"
        return f"{self.difference:+.3f} [{self.ci95[0]:+.3f}, {self.ci95[1]:+.3f}]"


def versus_first(runs: list[Run]) -> dict[str, Versus]:
    """{run name: Versus} of every run after the first, when there are several (`evaluation.paired`)."""
    from mtbert.evaluation.paired import paired_difference, run_dev_results

    if len(runs) < 2:
        return {}
    labels: dict = {}  # dev labels shared by runs of the same data folder and tasks
    try:
        first = run_dev_results(runs[0].path, runs[0].cfg, labels)
    except MtbertError as err:
        return {run.name: Versus(missing=f"the first run has no complete dev predictions ({err})") for run in runs[1:]}
    versus = {}
    for run in runs[1:]:
        try:
            difference, low, high = paired_difference(run_dev_results(run.path, run.cfg, labels), first)
            versus[run.name] = Versus(difference, (low, high))
        except MtbertError as err:
            versus[run.name] = Versus(missing=str(err))
    return versus


def table_notes(runs: list[Run], versus: dict[str, Versus]) -> str:
    """The table's notes: what its columns are, a line for each run whose overall score leaves out some of the
    table's tasks, and one for each run without a paired comparison."""
    lines = [TABLE_NOTE, VERSUS_NOTE] if versus else [TABLE_NOTE]
    specs = all_tasks(runs)
    for run in runs:
        missing = [s.name for s in specs if fmt(run.results.get(s.metric_key)) == "–"]
        if missing:
            lines.append(f"`{run.name}`: no {', '.join(missing)} result, so its overall score leaves "
                         f"{'it' if len(missing) == 1 else 'them'} out.")
    lines.extend(f"`{run.name}`: taken from `{run.taken_from}` by `mtbert bench quality --from_table`, which "
                 "carries its dev results and predictions but no curves or logs." for run in runs if run.taken_from)
    lines.extend(f"`{name}`: no Δ vs first run: {v.missing}." for name, v in versus.items() if v.missing)
    return "\n\n".join(lines)


def all_tasks(runs: list[Run]) -> list[TaskSpec]:
    """Every task of the runs, in first-seen order."""
    seen: dict[str, TaskSpec] = {}
    for run in runs:
        for spec in run.specs:
            seen.setdefault(spec.name, spec)
    return list(seen.values())


def results_table(runs: list[Run], versus: dict[str, Versus]) -> str:
    """The markdown table: one row per run, numbers from results.json to 3 decimals ('–' where absent), and with
    several runs each one's paired Δ vs the first (`versus_first`)."""
    keys = [s.metric_key for s in all_tasks(runs)]
    paired = ["Δ vs first run [95% CI]"] if versus else []
    header = ["run", "method", "task ratio", "sample weighting", "two-step", *keys, "overall", "overall 95% CI",
              *paired, "train time"]
    align = ["---"] * 5 + ["---:"] * (len(keys) + 3 + len(paired))
    rows = [header, align]
    for index, run in enumerate(runs):
        r = run.results
        ci = r.get("overall_ci95")
        ci_text = f"[{fmt(ci[0])}, {fmt(ci[1])}]" if isinstance(ci, list | tuple) and len(ci) == 2 else "–"
        ratios = ":".join(str(v) for v in run.cfg.ratios().values())
        paired_cell = ([] if not versus else ["reference" if index == 0 else versus[run.name].cell()])
        rows.append([escape(run.name), run.cfg.method, ratios, "yes" if run.cfg.sample_weighting else "no",
                     "yes" if run.two_step else "no", *(fmt(r.get(k)) for k in keys), fmt(r.get("overall")),
                     ci_text, *paired_cell, fmt_duration(r.get("train_seconds"))])
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


def fmt(value: Any) -> str:
    """A metric to 3 decimals, or '–' when absent or not a number."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return "–"
    return f"{value:.3f}"


def fmt_duration(seconds: Any) -> str:
    """Seconds as h:mm:ss (rounded to the second), or '–'."""
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not math.isfinite(seconds):
        return "–"
    total = round(seconds)
    return f"{total // 3600}:{total % 3600 // 60:02d}:{total % 60:02d}"


def escape(text: str) -> str:
    return text.replace("|", "\\|")


def figure_md(title: str, file: str, caption: str, notes: list[str] | None = None) -> str:
    extra = "".join(f"\n{note}\n" for note in notes or [])
    return f"## {title}\n\n![{title}]({file})\n\n*{caption}*\n{extra}"


def plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


# ---- plots ---------------------------------------------------------------------------------------


def series(lines: list[dict[str, Any]], key: str, offset: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(epochs + offset, values) of the lines that have a finite `key`."""
    points = [(float(r["epoch"]) + offset, float(r[key])) for r in lines
              if isinstance(r.get(key), int | float) and math.isfinite(r[key])]
    if not points:
        return np.empty(0), np.empty(0)
    x, y = zip(*points, strict=True)
    return np.array(x), np.array(y)


def draw(ax: Axes, run: Run, x: np.ndarray, y: np.ndarray, stage2: bool = False) -> None:
    """One run's curve: its colour and marker, solid for stage 1, dashed with hollow markers for stage 2."""
    if not len(x):
        return
    ax.plot(x, y, color=run.color, marker=run.marker, markersize=4.5, linewidth=1.6,
            linestyle=STAGE2_STYLE if stage2 else STAGE1_STYLE, markevery=max(1, len(x) // 12),
            markerfacecolor="white" if stage2 else run.color)


def run_handles(runs: list[Run]) -> list[Line2D]:
    return [Line2D([], [], color=r.color, marker=r.marker, markersize=5, linewidth=1.6, label=r.name) for r in runs]


def style_handles(two_step: bool, boundary: bool = True) -> list[Line2D]:
    """Legend entries explaining the stage line styles (none when no run is two-step)."""
    if not two_step:
        return []
    handles = [Line2D([], [], color="0.35", linestyle=STAGE1_STYLE, label="stage 1 (multi-task)"),
               Line2D([], [], color="0.35", linestyle=STAGE2_STYLE, marker="o", markerfacecolor="white",
                      markersize=4.5, label="stage 2 (per-task models)")]
    if boundary:
        handles.append(Line2D([], [], color="0.35", linestyle=":", label="stage boundary"))
    return handles


def legend_below(fig: Figure, handles: list[Line2D]) -> None:
    fig.legend(handles=handles, loc="outside lower center", ncol=min(3, len(handles)), frameon=False, fontsize=9)


def new_figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


def save(fig: Figure, path: Path) -> None:
    """The figure as a PNG file, written atomically (a full disk leaves the earlier plot)."""
    buffer = BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, facecolor="white")
    atomic_write_bytes(path, buffer.getvalue())


def plot_overall(runs: list[Run], path: Path) -> list[str]:
    """overall.png: overall dev score per epoch, one line per run, stage 2 continuing after stage 1.

    A stage-1 curve whose overall score covers fewer tasks than the run's results (a task with ratio 0 in
    a two-step run) is left out, not to be compared with the others; returns a note for each.
    """
    notes = []
    fig = new_figure(8.0, 5.2)
    ax = fig.add_subplot()
    for run in runs:
        keys = [s.metric_key for s in run.specs if s.metric_key in run.results]
        if run.history and not all(k in run.history[-1] for k in keys):
            left = [s.name for s in run.specs if s.metric_key in keys and s.metric_key not in run.history[-1]]
            notes.append(f"`{run.name}`: stage 1 trains no {', '.join(left)}, so its stage-1 overall score is "
                         "not comparable and is not drawn.")
        else:
            draw(ax, run, *series(run.history, "overall"))
        if run.stage2:
            draw(ax, run, *series(run.stage2, "overall", run.stage2_offset()), stage2=True)
            if run.history:
                ax.axvline(run.stage2_offset(), color=run.color, linestyle=":", linewidth=1.2, alpha=0.8)
    finish_axes(ax, "Overall dev score per epoch", "epoch", "overall dev score")
    legend_below(fig, run_handles(runs) + style_handles(any(r.two_step for r in runs)))
    save(fig, path)
    return notes


def plot_tasks(runs: list[Run], path: Path) -> None:
    """tasks.png: each task's dev metric per epoch, one subplot per task, one line per run."""
    specs = all_tasks(runs)
    fig = new_figure(max(6.0, 4.2 * len(specs)), 4.8)
    axes = fig.subplots(1, len(specs), squeeze=False)[0]
    for ax, spec in zip(axes, specs, strict=True):
        for run in runs:
            draw(ax, run, *series(run.history, spec.metric_key))
            if spec.name in run.stage2_tasks:
                offset = run.stage2_offset()
                draw(ax, run, *series(run.stage2_tasks[spec.name], spec.metric_key, offset), stage2=True)
                if run.history:
                    ax.axvline(offset, color=run.color, linestyle=":", linewidth=1.2, alpha=0.8)
        finish_axes(ax, f"{spec.name}: dev {metric_name(spec)}", "epoch", metric_name(spec))
    fig.suptitle("Dev metric of each task per epoch")
    legend_below(fig, run_handles(runs) + style_handles(any(r.two_step for r in runs)))
    save(fig, path)


def plot_stage2(runs: list[Run], path: Path) -> None:
    """stage2.png: each two-step run's specialised models per stage-2 epoch, one subplot per task."""
    runs = [r for r in runs if r.stage2_tasks]
    specs = [s for s in all_tasks(runs) if any(s.name in r.stage2_tasks for r in runs)]
    fig = new_figure(max(6.0, 4.2 * len(specs)), 4.6)
    axes = fig.subplots(1, len(specs), squeeze=False)[0]
    for ax, spec in zip(axes, specs, strict=True):
        for run in runs:
            if spec.name not in run.stage2_tasks:
                continue
            draw(ax, run, *series(run.stage2_tasks[spec.name], spec.metric_key), stage2=True)
            start = run.stage1_results.get(spec.metric_key)
            if isinstance(start, int | float):
                ax.axhline(start, color=run.color, linestyle=":", linewidth=1.2, alpha=0.8)
        finish_axes(ax, f"{spec.name}: dev {metric_name(spec)}", "stage-2 epoch", metric_name(spec))
    fig.suptitle("Stage 2: each task's specialised model per epoch")
    handles = run_handles(runs)
    for h in handles:
        h.set_linestyle(STAGE2_STYLE)
        h.set_markerfacecolor("white")
    handles.append(Line2D([], [], color="0.35", linestyle=":", label="stage-1 best model's score"))
    legend_below(fig, handles)
    save(fig, path)


def plot_conflicts(runs: list[Run], path: Path) -> int:
    """conflicts.png: per task pair, cosine and conflict rate over steps; a row of per-task grad norms.

    Returns the rolling-mean window (in logged steps) used for every run.
    """
    logs = {r.name: [rec for rec in r.train_log if "cosine" in rec] for r in runs}
    pairs = list(dict.fromkeys(p for recs in logs.values() for rec in recs for p in rec["cosine"]))
    tasks = list(dict.fromkeys(t for recs in logs.values() for rec in recs for t in rec.get("grad_norm", {})))
    longest = max(len(v) for v in logs.values())
    window = int(min(100, max(min(5, longest), longest // 15)))  # at least 5 steps: a rate of 1 step is 0 or 1
    columns = math.lcm(2, max(1, len(tasks)))
    rows = len(pairs) + (1 if tasks else 0)
    fig = new_figure(11.0, 2.7 * rows + 0.9)
    grid = fig.add_gridspec(rows, columns)
    for row, pair in enumerate(pairs):
        cos_ax = fig.add_subplot(grid[row, : columns // 2])
        rate_ax = fig.add_subplot(grid[row, columns // 2 :], sharex=cos_ax)
        for run in runs:
            recs = [rec for rec in logs[run.name] if pair in rec["cosine"]]
            if not recs:
                continue
            steps = np.array([rec["step"] for rec in recs], dtype=float)
            cos = np.array([rec["cosine"][pair] for rec in recs], dtype=float)
            conflict = np.array([bool(rec.get("conflict", {}).get(pair, c < 0)) for rec, c in zip(recs, cos,
                                                                                                   strict=True)])
            cos_ax.plot(steps, cos, color=run.color, linewidth=0.5, alpha=0.15)
            draw_steps(cos_ax, run, steps, rolling_mean(cos, window))
            draw_steps(rate_ax, run, steps, rolling_mean(conflict.astype(float), window))
        cos_ax.axhline(0.0, color="0.5", linewidth=0.8)
        finish_axes(cos_ax, f"{pair}: gradient cosine similarity", "step", "cosine")
        finish_axes(rate_ax, f"{pair}: conflict rate", "step", "steps with cosine < 0")
        rate_ax.set_ylim(-0.03, 1.03)
        rate_ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    if tasks:
        width = columns // len(tasks)
        first = None
        for i, task in enumerate(tasks):
            ax = fig.add_subplot(grid[rows - 1, i * width : (i + 1) * width], sharey=first)
            first = first or ax
            for run in runs:
                recs = [rec for rec in logs[run.name] if task in rec.get("grad_norm", {})]
                steps = np.array([rec["step"] for rec in recs], dtype=float)
                norms = np.array([rec["grad_norm"][task] for rec in recs], dtype=float)
                keep = norms > 0
                draw_steps(ax, run, steps[keep], rolling_mean(norms[keep], window))
            ax.set_yscale("log")
            ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.yaxis.set_minor_formatter(NullFormatter())
            finish_axes(ax, f"{task}: gradient norm", "step", "|g| (shared encoder)" if i == 0 else "")
            ax.xaxis.set_major_locator(MaxNLocator(nbins=4, integer=True))
    fig.suptitle(f"Per-task gradients of the shared encoder (rolling mean over {plural(window, 'logged step')})")
    legend_below(fig, run_handles(runs) + [Line2D([], [], color="0.35", linewidth=0.7, alpha=0.35,
                                                  label="raw cosine per logged step")])
    save(fig, path)
    return window


def draw_steps(ax: Axes, run: Run, x: np.ndarray, y: np.ndarray) -> None:
    if len(x):
        ax.plot(x, y, color=run.color, linewidth=1.5, marker=run.marker, markersize=4,
                markevery=max(1, len(x) // 8))


def rolling_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Centred rolling mean over `window` values (fewer at both ends)."""
    n = len(values)
    if n == 0 or window <= 1:
        return np.asarray(values, dtype=float)
    sums = np.concatenate([[0.0], np.cumsum(values, dtype=float)])
    index = np.arange(n)
    lo = np.maximum(0, index - window // 2)
    hi = np.minimum(n, index - window // 2 + window)
    return (sums[hi] - sums[lo]) / (hi - lo)


def metric_name(spec: TaskSpec) -> str:
    """The task's primary metric in words, as a report's axis names it."""
    return kinds.METRICS[spec.metric].words


def finish_axes(ax: Axes, title: str, xlabel: str, ylabel: str) -> None:
    ax.set_title(title, fontsize=10.5)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3, linewidth=0.6)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if xlabel == "step":
        ax.xaxis.set_major_formatter(FuncFormatter(step_label))
    if not ax.lines:
        ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center", color="0.5")


def step_label(value: float, _position: object = None) -> str:
    """Step ticks: 5000 as 5k."""
    return f"{value / 1000:g}k" if abs(value) >= 1000 else f"{value:g}"
