"""Combining runs: a vote over prediction files, or a soft average of their scores.

Vote, by the rule of each task's kind (`TaskKind.vote`; results.json's `vote_rules` says which each file used): a
classification task takes the most voted class, a tie going to the tied class with the highest summed probability
when every member has its `scores/` file, else to the earliest member listed; a task whose classes are ordered
(`ordered_labels: true`, as the built-in SST) takes the members' mean class rounded half up, the CS224N report's
rule; a regression task takes the mean value; token, multi-label and multiple-choice tasks take a majority per
word, per label and of the choices. Soft averages the members' `scores/` (probabilities or values) and then
decides as one model would.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mtbert.errors import DataError, MtbertError
from mtbert.io import atomic_write_json, read_json
from mtbert.kinds.base import values_array
from mtbert.kinds.sentence import majority  # noqa: F401 - importable from here as before
from mtbert.runs.layout import PREDICTIONS, SCORES, RunDir
from mtbert.runs.output import claim_output_dir
from mtbert.tasks import BUILTIN_TASKS, TaskSpec

logger = logging.getLogger(__name__)

MODES = ("vote", "soft")
SPLITS = ("dev", "test")


@dataclass(frozen=True)
class Member:
    """One member as given, with its prediction folder, its scores folder and the folder of its config."""

    path: Path
    predictions: Path
    scores: Path | None  # None for a bare predictions/ folder
    run_dir: Path | None  # the folder holding config.yaml, when there is one


def resolve_member(path: Path) -> Member:
    """A run folder (config.yaml or predictions/ inside) or a predictions/ folder; anything else is an error."""
    run = RunDir(path)
    if run.config.is_file() or (run.root / PREDICTIONS).is_dir():
        run_dir = path if run.config.is_file() else None
        return Member(path, run.root / PREDICTIONS, run.root / SCORES, run_dir)
    if path.is_dir():
        run_dir = path.parent if RunDir(path.parent).config.is_file() else None
        return Member(path, path, None, run_dir)
    raise MtbertError(f"{path}: ensemble member not found (give a run folder or its predictions/ folder)")


def prediction_file(task: str, split: str, suffix: str = ".csv") -> str:
    """A task's prediction file name (`suffix`: its kind's `prediction_suffix`)."""
    return f"{task}-{split}-output{suffix}"


def score_file(task: str, split: str) -> str:
    return f"{task}-{split}.tsv"


def score_columns(spec: TaskSpec) -> list[str]:
    """Columns of a task's scores file after `id`, as its kind writes them (`value`, `prob_1`, `prob_0..`)."""
    return spec.task_kind.score_columns(spec)


# ---- the combining rules -------------------------------------------------------------------------


def vote(spec: TaskSpec, predictions: np.ndarray, scores: np.ndarray | None = None) -> np.ndarray:
    """Combine members' predictions (members x examples) by the rule of the task's kind (see the module); `scores`
    (members x examples x score columns) go to a kind whose vote reads them."""
    predictions = np.asarray(predictions)
    predictions = predictions if predictions.dtype == object else predictions.astype(float)
    if scores is not None and spec.task_kind.vote_takes_scores(spec):
        return spec.task_kind.vote(spec, predictions, scores=np.asarray(scores, dtype=float))
    return spec.task_kind.vote(spec, predictions)


def decide_scores(spec: TaskSpec, scores: np.ndarray) -> np.ndarray:
    """Predictions from scores (examples x columns), as the task's kind decides them: argmax of probabilities,
    prob_1 > 0.5, or the value."""
    return spec.task_kind.decide_scores(spec, np.asarray(scores, dtype=float))


def soft(spec: TaskSpec, scores: np.ndarray) -> np.ndarray:
    """Combine members' scores (members x examples x columns, or members x examples of per-word arrays) by
    averaging, then decide."""
    scores = np.asarray(scores)
    if scores.dtype != object:
        return decide_scores(spec, scores.astype(float).mean(axis=0))
    return spec.task_kind.decide_scores(spec, values_array([np.mean(np.stack(list(column)), axis=0)
                                                            for column in scores.T]))


# ---- reading members' files ----------------------------------------------------------------------


def read_predictions(path: Path, spec: TaskSpec) -> dict[str, Any]:
    """A member's prediction file as {id: prediction}, checking that classes are classes of the task."""
    values = spec.task_kind.read_predictions(path, spec)  # class names (label_names) back to class indices
    for example_id, value in values.items():
        why = spec.task_kind.check_prediction(spec, value)
        if why is not None:
            raise DataError(f"{path}: prediction {value:g} for id {example_id} {why}")
    return values


def read_scores(path: Path, spec: TaskSpec) -> dict[str, np.ndarray]:
    """A member's scores file as {id: row of probabilities or the value}, checking its columns (a kind with its
    own scores file reads it)."""
    own = spec.task_kind.read_scores(path, spec)
    if own is not None:
        return own
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot be read ({err})") from None
    expected = ["id", *score_columns(spec)]
    if not lines or lines[0].split("\t") != expected:
        raise DataError(f"{path}, line 1: expected the columns {', '.join(expected)} for task {spec.name}")
    values: dict[str, np.ndarray] = {}
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != len(expected):
            raise DataError(f"{path}, line {number}: {len(parts)} fields where the header has {len(expected)}")
        try:
            row = np.array([float(v) for v in parts[1:]])
        except ValueError:
            raise DataError(f"{path}, line {number}: a score is not a number") from None
        if not np.isfinite(row).all():
            raise DataError(f"{path}, line {number}: a score is not finite")
        values[parts[0].strip()] = row
    return values


def check_ids(name: str, members: list[Member], tables: list[dict[str, Any]]) -> None:
    """Every member must predict the same ids in file `name`."""
    reference = set(tables[0])
    for member, table in zip(members[1:], tables[1:], strict=True):
        ids = set(table)
        if ids != reference:
            missing, extra = reference - ids, ids - reference
            example = sorted(missing or extra)[0]
            raise MtbertError(
                f"{name}: member {member.path} has {len(missing)} ids missing and {len(extra)} extra ids "
                f"compared with {members[0].path} (e.g. id {example}); members must predict the same examples"
            )


# ---- tasks and labels ----------------------------------------------------------------------------


def resolve_tasks(members: list[Member]) -> tuple[dict[str, TaskSpec], Path, int | None]:
    """Task specs, data folder and max_eval_samples from the first member with a config, else the built-ins."""
    for member in members:
        if member.run_dir is not None:
            from mtbert.evaluation.finished import load_run_config, with_saved_labels

            cfg = load_run_config(member.run_dir)
            run = RunDir(member.run_dir)  # with the class names its model saved (labels that are names)
            specs = [with_saved_labels(s, run.model_for(s.name)) for s in cfg.task_specs()]
            return {s.name: s for s in specs}, cfg.resolved_data_dir(), cfg.max_eval_samples
    return dict(BUILTIN_TASKS), Path(os.environ.get("MTBERT_DATA") or "data"), None


def dev_labels(spec: TaskSpec, data_dir: Path, limit: int | None) -> dict[str, Any] | None:
    """{id: label} of the task's dev file (its first `limit` usable rows), or None when the file is absent."""
    from mtbert.data.loading import read_split
    from mtbert.evaluation.finished import usable_examples

    if not spec.dev_file or not (data_dir / spec.dev_file).is_file():
        logger.warning("%s: no dev labels for task %s (file %s not found); its dev metrics are left out",
                       data_dir, spec.name, spec.dev_file)
        return None
    examples = usable_examples(read_split(spec, "dev", data_dir))  # with its label file, if it has one
    if limit is not None:
        examples = examples[:limit]
    return {e.id: e.label for e in examples}


# ---- the command ---------------------------------------------------------------------------------


def run_ensemble(members: list[Path], output_dir: Path, mode: str = "vote") -> dict:
    """Combine members' dev and test predictions into `output_dir` (CS224N files and results.json)."""
    output_dir = Path(output_dir)
    resolved = check_members([Path(m) for m in members], output_dir, mode)
    specs, data_dir, max_eval_samples = resolve_tasks(resolved)
    note_unknown_files(resolved, specs, mode)

    written: list[str] = []
    rules: dict[str, str] = {}
    dev: dict[str, tuple[TaskSpec, list[str], np.ndarray, list[np.ndarray]]] = {}
    for spec in specs.values():
        for split in SPLITS:
            combined = combine_split(resolved, spec, split, mode)
            if combined is None:
                continue
            ids, predictions, per_member, extras, rule = combined
            name = prediction_file(spec.name, split, spec.task_kind.prediction_suffix)
            spec.task_kind.write_predictions(output_dir / name, spec, ids, predictions, extras)
            written.append(name)
            if rule is not None:
                rules[name] = rule
                logger.info("ensemble: %s: %s", name, rule)
            if split == "dev":
                # score the predictions as written (regression values are rounded in the file)
                read_back = spec.task_kind.read_predictions(output_dir / name, spec)
                dev[spec.name] = (spec, ids, values_array([read_back[i] for i in ids]), per_member)
    if not written:
        pattern = "predictions/{task}-{split}-output.csv" if mode == "vote" else "scores/{task}-{split}.tsv"
        raise MtbertError(f"ensemble: the members share no prediction files ({pattern})")
    metrics, member_metrics = dev_metrics(dev, data_dir, max_eval_samples, len(resolved))
    results = {"mode": mode, "members": [str(m) for m in members], "ensemble": metrics,
               "member_metrics": member_metrics, "files": written}
    if mode == "vote":
        results["vote_rules"] = rules
    atomic_write_json(RunDir(output_dir).results, results)
    from mtbert.runs.model_card import write_ensemble_card

    write_ensemble_card(output_dir, results, specs)  # README.md: members, rule, dev metrics
    return results


def check_members(members: list[Path], output_dir: Path, mode: str) -> list[Member]:
    """Resolve the members and refuse what cannot work: no members, soft without scores/, output into a member."""
    if mode not in MODES:
        raise MtbertError(f"--mode: '{mode}' is not one of {' | '.join(MODES)}")
    if not members:
        raise MtbertError("ensemble: give at least one member")
    resolved = [resolve_member(m) for m in members]
    for member in resolved:
        if mode == "soft" and (member.scores is None or not member.scores.is_dir()):
            raise MtbertError(
                f"{member.path}: --mode soft averages the scores/ of run folders and this member has none; "
                "give its run folder or use --mode vote"
            )
        if output_dir.resolve() in (member.predictions.resolve(), member.path.resolve()):
            raise MtbertError(f"--output_dir: {output_dir} is a member's folder; choose a new folder")
    seen: dict[Path, Member] = {}
    for member in resolved:
        first = seen.setdefault(member.predictions.resolve(), member)
        if first is not member:
            logger.warning("ensemble: %s is listed again (as %s): its predictions count once more in the vote; list "
                           "each run once unless you mean to weigh it more", first.path, member.path)
    if len(seen) == 1:
        logger.warning("ensemble: one distinct member (%s), so the ensemble repeats its predictions; give two or more "
                       "runs", resolved[0].path)
    claim_output_dir(output_dir, "ensemble", "--output_dir", is_ensemble_output)
    return resolved


def is_ensemble_output(folder: Path) -> bool:
    """Whether `folder` holds an earlier ensemble's output (its results.json names a mode and members; no run)."""
    results = read_json(RunDir(folder).results)
    return (results is not None and results.get("mode") in MODES and isinstance(results.get("members"), list)
            and not RunDir(folder).config.is_file())


def combine_split(members: list[Member], spec: TaskSpec, split: str, mode: str
                  ) -> tuple[list[str], np.ndarray, list[np.ndarray], list[Any] | None, str | None] | None:
    """(ids, ensemble predictions, each member's predictions, what the kind writes beside the predictions, the vote's
    rule in words or None for soft) of one task and split; None when not shared."""
    kind = spec.task_kind
    name = prediction_file(spec.name, split, kind.prediction_suffix) if mode == "vote" else score_file(spec.name,
                                                                                                         split)
    paths = [(m.predictions if mode == "vote" else m.scores) / name for m in members]
    lacking = [str(m.path) for m, p in zip(members, paths, strict=True) if not p.is_file()]
    if len(lacking) == len(members):
        return None
    if lacking:
        logger.warning("%s: skipped, since %s lack%s it", name, ", ".join(lacking), "s" if len(lacking) == 1 else "")
        return None
    if mode == "vote":
        tables: list[dict[str, Any]] = [read_predictions(p, spec) for p in paths]
    else:
        tables = [read_scores(p, spec) for p in paths]
    check_ids(name, members, tables)
    ids = list(tables[0])
    rows = [_rows_array([table[i] for i in ids]) for table in tables]
    first = members[0].predictions / prediction_file(spec.name, split, kind.prediction_suffix)
    found = kind.prediction_extras(first, spec) if first.is_file() else None
    extras = [found[i] for i in ids] if found is not None else None
    if rows[0].dtype == object:  # per-example arrays (a token task's tags): members x examples of arrays
        stack = np.empty((len(members), len(ids)), dtype=object)
        for m, row in enumerate(rows):
            stack[m] = row
        if mode == "vote":
            return ids, vote(spec, stack), list(stack), extras, kind.vote_rule(spec, False)
        return ids, soft(spec, stack), [kind.decide_scores(spec, s) for s in stack], extras, None
    if mode == "vote":
        stack = np.array(rows, dtype=float).reshape(len(members), len(ids))
        scores = vote_scores(members, spec, split, ids) if kind.vote_takes_scores(spec) else None
        return ids, vote(spec, stack, scores), list(stack), extras, kind.vote_rule(spec, scores is not None)
    stack = np.array(rows, dtype=float).reshape(len(members), len(ids), len(score_columns(spec)))
    return ids, soft(spec, stack), [decide_scores(spec, s) for s in stack], extras, None


def vote_scores(members: list[Member], spec: TaskSpec, split: str, ids: list[str]) -> np.ndarray | None:
    """Every member's scores of `ids` (members x examples x columns) for a vote that breaks ties by them, or None
    when a member has no scores file (a bare predictions/ folder) or one that does not fit its predictions (said
    in a warning: the vote then breaks ties by the earliest member)."""
    name = score_file(spec.name, split)
    if any(m.scores is None or not (m.scores / name).is_file() for m in members):
        return None
    stack = []
    for member in members:
        path = member.scores / name  # type: ignore[operator]
        try:
            table = read_scores(path, spec)
        except MtbertError as err:
            logger.warning("ensemble: %s; ties of the vote go to the earliest member", err)
            return None
        missing = [i for i in ids if i not in table]
        if missing:
            logger.warning("ensemble: %s has no scores for %d predicted ids (e.g. id %s); ties of the vote go to "
                           "the earliest member", path, len(missing), missing[0])
            return None
        stack.append([table[i] for i in ids])
    return np.array(stack, dtype=float)


def _rows_array(values: list[Any]) -> np.ndarray:
    """A member's values in the ids' order: numbers, or rows of scores of one width, as a float array; per-word
    arrays of different lengths (a token task's) as an object array."""
    if all(isinstance(v, np.ndarray) for v in values) and len({v.shape for v in values}) == 1 and values:
        if values[0].ndim <= 1:
            return np.array(values, dtype=float)
    return values_array(values)


def dev_metrics(dev: dict[str, tuple[TaskSpec, list[str], np.ndarray, list[np.ndarray]]], data_dir: Path,
                limit: int | None, n_members: int) -> tuple[dict[str, Any], list[dict[str, float]]]:
    """Metrics (with the overall score's bootstrap interval) of the ensemble and of each member on the dev labels."""
    from mtbert.evaluation.metrics import bootstrap_overall, compute_metrics

    ensemble: dict[str, tuple[TaskSpec, np.ndarray, np.ndarray]] = {}
    members: list[dict[str, tuple[TaskSpec, np.ndarray, np.ndarray]]] = [{} for _ in range(n_members)]
    for task, (spec, ids, predictions, per_member) in dev.items():
        labels = dev_labels(spec, data_dir, limit)
        if labels is None:
            continue
        position = {example_id: k for k, example_id in enumerate(ids)}
        scored = [example_id for example_id in labels if example_id in position]
        name = prediction_file(task, "dev", spec.task_kind.prediction_suffix)
        if not scored:
            logger.warning("%s: no predicted id has a dev label; its dev metrics are left out", name)
            continue
        if len(scored) < len(labels):
            logger.warning("%s: %d of %d dev labels have no prediction; metrics use the %d that do",
                           name, len(labels) - len(scored), len(labels), len(scored))
        index = np.array([position[i] for i in scored])
        y = spec.task_kind.label_array([labels[i] for i in scored])
        ensemble[task] = (spec, predictions[index], y)
        for k, own in enumerate(per_member):
            members[k][task] = (spec, own[index], y)
    if not ensemble:
        return {}, [{} for _ in range(n_members)]
    metrics: dict[str, Any] = compute_metrics(ensemble)
    metrics["overall_ci95"] = list(bootstrap_overall(ensemble))
    return metrics, [compute_metrics(m) for m in members]


def note_unknown_files(members: list[Member], specs: dict[str, TaskSpec], mode: str) -> None:
    """Log files in members' folders that belong to no known task (they are not combined)."""
    known = {prediction_file(t, s, specs[t].task_kind.prediction_suffix) for t in specs for s in SPLITS}
    known |= {score_file(t, s) for t in specs for s in SPLITS}
    known |= {Path(name).with_suffix(".conll").name for name in known}  # a token task's CoNLL copies
    pattern = "*-output.*" if mode == "vote" else "*.tsv"
    for member in members:
        folder = member.predictions if mode == "vote" else member.scores
        if folder is None or not folder.is_dir():
            continue
        for path in sorted(folder.glob(pattern)):
            if path.name not in known:
                logger.warning("%s: skipped, not a file of the tasks %s", path, ", ".join(specs))
