"""`mtbert export`: one task of a run as a sentence-transformers folder that loads without mtbert.

What each kind of head becomes (every module is a stock sentence-transformers module, so the folder loads
with ``trust_remote_code=False`` and reproduces ``mtbert predict``):

- a single-sentence task: a ``SentenceTransformer`` (Transformer, Pooling, one ``Dense`` with GELU per hidden
  size, a last ``Dense`` without activation) whose ``encode(texts)`` returns the head's logits: the class is
  their argmax, the probabilities their softmax;
- a pair task of the ``cross`` architecture: a ``CrossEncoder`` with the same module stack writing ``scores``;
  ``predict(pairs)`` returns the value (regression), the paraphrase probability (binary: sigmoid) or the
  logits (more classes);
- a pair task of the ``bi-cosine`` architecture: a ``SentenceTransformer`` (Transformer, Pooling, the head's
  GELU layers, Normalize, then one ``Dense`` mapping the unit vector x to [sqrt(scale) x, sqrt(shift)]) with
  dot-product similarity, so that ``similarity(encode(a), encode(b))`` is exactly mtbert's
  ``scale * cos(u, v) + shift``; this needs scale > 0 and shift >= 0.

A ``bi-concat`` head (an MLP over the concatenated pair [u, v]) cannot be exported: a SentenceTransformer
scores a pair only by a fixed similarity of the two embeddings.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from pathlib import Path

import torch
from torch import nn

from mtbert.distribution import install_hint
from mtbert.errors import MtbertError
from mtbert.kinds import ExportPlan
from mtbert.runs.layout import RunDir
from mtbert.tasks import TaskSpec


def export_task(run_dir: str | Path, task: str, output: str | Path,
                load_as: str | None = None) -> tuple[Path, ExportPlan]:
    """Write `task`'s model of the run at `run_dir` into `output` as a sentence-transformers folder; its model
    card loads it by `load_as` (a Hub repo id it is pushed to), else by the folder's path.

    Everything is checked before anything is written: the run, the task, the head (see the module docstring)
    and `output` (a new or empty folder). The folder is filled in a temporary sibling and renamed into place.
    """
    from mtbert.evaluation.finished import load_run_config, model_dirs, trained_tasks
    from mtbert.model import MultiTaskModel, load_tokenizer

    try:
        import sentence_transformers  # noqa: F401
    except ImportError:
        raise MtbertError(f"mtbert export: needs sentence-transformers; {install_hint('export')}") from None
    run = RunDir(run_dir)
    output = Path(output)
    cfg = load_run_config(run.root)
    specs = {s.name: s for s in trained_tasks(run.root, cfg)}
    if task not in specs:
        raise MtbertError(f"--task: the run {run.root} has no trained task {task} (tasks: {', '.join(specs)})")
    check_output(output, run)
    spec = specs[task]
    model_dir = model_dirs(run.root, cfg)[task]
    model = MultiTaskModel.from_pretrained(model_dir).eval()  # the trained dropout stays in config.json
    head = model.heads[task]
    plan = plan_for(spec, head.architecture)
    if head.architecture == "bi-cosine":
        cosine_affine(spec, head)  # refuses a scale or shift that a dot product cannot express
    tokenizer = load_tokenizer(model_dir)
    logging.getLogger("sentence_transformers").setLevel(logging.WARNING)  # no "Saving model to <tmp>" lines
    with tempfile.TemporaryDirectory(prefix="mtbert-export-") as staging:
        encoder_dir = Path(staging) / "encoder"
        plain_encoder(model.encoder).save_pretrained(encoder_dir, safe_serialization=True)
        tokenizer.save_pretrained(encoder_dir)
        if plan.library_class == TOKEN_CLASSIFICATION:
            exported = build_token_model(spec, head, encoder_dir)
        else:
            exported = build_model(spec, head, model.pooling, encoder_dir, cfg.max_length)

        def fill(tmp: Path) -> None:
            if plan.library_class == TOKEN_CLASSIFICATION:
                exported.save_pretrained(str(tmp), safe_serialization=True)
                tokenizer.model_max_length = cfg.max_length
                tokenizer.save_pretrained(str(tmp))
            else:
                exported.save_pretrained(str(tmp), create_model_card=False)
            _write_card(tmp, run, cfg, spec, plan, load_as or output.as_posix(), public=load_as is not None)

        from mtbert.io import atomic_dir

        atomic_dir(output, fill)
    return output, plan


def check_output(output: Path, run: RunDir) -> None:
    """`output` must be a new or empty folder outside the run's model folders."""
    from mtbert.runs.output import claim_output_dir

    claim_output_dir(output, "export", "--output")  # an export replaces no folder, not even an earlier export
    resolved = output.resolve()
    if resolved == run.root.resolve() or run.best.resolve() in (resolved, *resolved.parents):
        raise MtbertError(f"--output: {output} is inside the run's model folder; choose a folder outside it")


def plan_for(spec: TaskSpec, architecture: str) -> ExportPlan:
    """The export of a head of this task and architecture, as its kind plans it, or MtbertError saying why there
    is none."""
    return spec.task_kind.export_plan(spec, architecture)


def plain_encoder(encoder: nn.Module) -> nn.Module:
    """The encoder as a plain transformers model: a peft model's adapters are merged in (one call)."""
    if hasattr(encoder, "merge_and_unload"):
        return encoder.merge_and_unload()
    return encoder


def head_linears(spec: TaskSpec, head: nn.Module) -> list[nn.Linear]:
    """The head's Linear layers in order, after checking the layout TaskHead builds ([Linear, GELU] per size)."""
    layers = [m for m in head.mlp if not isinstance(m, nn.Dropout)]
    linears = [m for m in layers if isinstance(m, nn.Linear)]
    gelus = [m for m in layers if isinstance(m, nn.GELU)]
    hidden = len(spec.head_hidden_sizes)
    if len(gelus) != hidden or any(g.approximate != "none" for g in gelus) or len(linears) not in (hidden,
                                                                                                   hidden + 1):
        raise MtbertError(f"--task {spec.name}: the head is not an MLP of Linear and GELU layers; cannot export it")
    return linears


def cosine_affine(spec: TaskSpec, head: nn.Module) -> tuple[float, float]:
    """A bi-cosine head's (scale, shift), checked to be expressible as a dot product (scale > 0, shift >= 0)."""
    scale, shift = float(head.scale.detach()), float(head.shift.detach())
    if not (math.isfinite(scale) and math.isfinite(shift)) or scale <= 0 or shift < 0:
        raise MtbertError(
            f"--task {spec.name}: the bi-cosine head's score {scale:g} * cos + {shift:g} cannot be exported, because "
            "a SentenceTransformer's dot-product similarity can only express a positive scale and a non-negative "
            "shift"
        )
    return scale, shift


def _dense(linear: nn.Linear, activation: nn.Module, output_name: str | None = None):
    from sentence_transformers.base.modules import Dense

    return Dense(linear.in_features, linear.out_features, bias=linear.bias is not None,
                 activation_function=activation, init_weight=linear.weight.detach().clone(),
                 init_bias=None if linear.bias is None else linear.bias.detach().clone(),
                 module_output_name=output_name)


def build_model(spec: TaskSpec, head: nn.Module, pooling: str, encoder_dir: Path, max_length: int):
    """The sentence-transformers model of one head on the encoder saved in `encoder_dir`."""
    from sentence_transformers import CrossEncoder, SentenceTransformer
    from sentence_transformers.base.modules import Dense, Normalize, Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    transformer = Transformer(str(encoder_dir), transformer_task="feature-extraction", max_seq_length=max_length)
    transformer.max_seq_length = max_length
    hidden = transformer.get_embedding_dimension()
    modules: list[nn.Module] = [transformer, Pooling(hidden, pooling)]
    linears = head_linears(spec, head)
    for linear in linears[:len(spec.head_hidden_sizes)]:
        modules.append(_dense(linear, nn.GELU()))
    if head.architecture == "bi-cosine":
        scale, shift = cosine_affine(spec, head)
        width = linears[-1].out_features if linears else hidden
        weight = torch.zeros(width + 1, width)
        weight[:width] = torch.eye(width) * math.sqrt(scale)
        bias = torch.zeros(width + 1)
        bias[width] = math.sqrt(shift)
        modules += [Normalize(), Dense(width, width + 1, activation_function=nn.Identity(), init_weight=weight,
                                       init_bias=bias)]
        return _cpu(SentenceTransformer(modules=modules, similarity_fn_name="dot", device="cpu"))
    plan = plan_for(spec, head.architecture)
    if plan.library_class == "SentenceTransformer":
        modules.append(_dense(linears[-1], nn.Identity()))
        return _cpu(SentenceTransformer(modules=modules, device="cpu"))
    modules.append(_dense(linears[-1], nn.Identity(), output_name="scores"))
    activation = nn.Sigmoid() if plan.activation == "sigmoid" else nn.Identity()
    return _cpu(CrossEncoder(modules=modules, activation_fn=activation, device="cpu"))


TOKEN_CLASSIFICATION = "AutoModelForTokenClassification"


def build_token_model(spec: TaskSpec, head: nn.Module, encoder_dir: Path):
    """A transformers token-classification model: the encoder saved in `encoder_dir` and the head's one linear
    layer as its classifier, with the task's tags as `id2label`."""
    from transformers import AutoModelForTokenClassification
    from transformers.utils import logging as hf_logging

    linear = head_linears(spec, head)[-1]
    names = list(spec.label_names or [str(k) for k in range(linear.out_features)])
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the encoder's pooler is not used, the classifier is set below
    try:
        model = AutoModelForTokenClassification.from_pretrained(
            str(encoder_dir), num_labels=len(names), id2label=dict(enumerate(names)),
            label2id={name: k for k, name in enumerate(names)})
    finally:
        hf_logging.set_verbosity(verbosity)
    classifier = getattr(model, "classifier", None)
    if not isinstance(classifier, nn.Linear) or classifier.weight.shape != linear.weight.shape:
        raise MtbertError(f"--task {spec.name}: {type(model).__name__} has no linear classifier of the head's shape; "
                          "cannot export this task")
    with torch.no_grad():
        classifier.weight.copy_(linear.weight)
        classifier.bias.copy_(linear.bias)
    return _cpu(model)


def _cpu(model):
    return model.to("cpu").eval()


def _write_card(folder: Path, run: RunDir, cfg, spec: TaskSpec, plan: ExportPlan, location: str,
                public: bool) -> None:
    """The model card and `mtbert_export.json`; `public` (pushed to the Hub): no folder of this machine named."""
    from mtbert.runs.model_card import export_card

    (folder / "README.md").write_text(export_card(run, cfg, spec, plan, location, public), encoding="utf-8")
    # the exported folder says where it came from (read by nothing; for people)
    (folder / "mtbert_export.json").write_text(json.dumps({
        "run_dir": run.root.name if public else str(run.root), "task": spec.name, "library_class": plan.library_class,
        "architecture": plan.architecture, "kind": spec.kind, "max_length": cfg.max_length,
    }, indent=2) + "\n", encoding="utf-8")
