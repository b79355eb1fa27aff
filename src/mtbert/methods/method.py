"""The Method object: how one training step turns each task's loss into the parameters' `.grad`.

Three kinds of method, one interface (`backward`, `after_step`, `state_dict` / `load_state_dict`):

- summed loss (`sum`, `single`): each task's scaled loss is backpropagated and the gradients add up;
- loss weighting (`uncertainty`, `famo`; weighting.py): the same, with a weight per task on its loss;
- gradient surgery (`pcgrad`, `cagrad`, ...; aggregators.py): after each task's backward its gradient of the
  shared encoder is moved into a T x P buffer (pertask.py); the aggregator combines the rows, globally or per
  encoder layer, and the result is written back as `.grad`.

The buffer is also filled, with the `sum` aggregator, when a summed-loss step logs diagnostics for several
tasks or runs on several processes (where the buffer is what the ranks average). `make_method` is the only
code that reads `cfg.method`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from mtbert.distributed import ONE_PROCESS, Ranks
from mtbert.methods.aggregators import AGGREGATORS, Aggregator, diagnose, make_aggregator
from mtbert.methods.pertask import PerTaskGradients, aggregate_per_layer
from mtbert.methods.weighting import FAMO, LOSS_WEIGHTINGS, UncertaintyWeighting, make_weighting

SUMMED_LOSS = ("sum", "single")
METHODS = (*SUMMED_LOSS, *(m for m in AGGREGATORS if m != "sum"), *LOSS_WEIGHTINGS)

# (task, batch) -> (the task's summed loss for reporting, the objective to backpropagate)
TaskObjective = Callable[[str, dict], tuple[torch.Tensor, torch.Tensor]]


class Method:
    """One training method over a model's shared parameters (see the module docstring)."""

    def __init__(self, name: str, model: nn.Module, tasks: list[str], ranks: Ranks = ONE_PROCESS, seed: int = 0,
                 per_layer: bool = False) -> None:
        self.name = name
        self.tasks = list(tasks)
        self.ranks = ranks
        self.surgery = name in AGGREGATORS and name != "sum"
        self.aggregate: Aggregator = make_aggregator(name if self.surgery else "sum")
        self.per_layer = per_layer
        self.weighting: UncertaintyWeighting | FAMO | None = make_weighting(name, self.tasks)
        self.generator = torch.Generator().manual_seed(seed)  # orders the method's random choices; checkpointed
        self.model = model
        encoder = getattr(model, "encoder", model)
        embedding = encoder.get_input_embeddings().weight if hasattr(encoder, "get_input_embeddings") else None
        shared = [(n, p) for n, p in encoder.named_parameters() if p.requires_grad]
        if embedding is not None and not embedding.requires_grad:
            embedding = None
        self.vocab_size = embedding.shape[0] if embedding is not None else 0
        self.buffer = PerTaskGradients([p for _, p in shared], len(self.tasks), embedding,
                                       names=[n for n, _ in shared])

    @property
    def loss_module(self) -> nn.Module | None:
        """A weighting with trainable parameters (uncertainty's log-variances), trained with the model."""
        return self.weighting if isinstance(self.weighting, nn.Module) else None

    def uses_buffer(self, num_tasks: int, diagnostics: bool) -> bool:
        return self.surgery or self.ranks.distributed or (diagnostics and num_tasks > 1)

    def backward(self, batches: dict[str, dict], loss_scale: dict[str, float], objective: TaskObjective,
                 diagnostics: bool = False, scaler: torch.amp.GradScaler | None = None
                 ) -> tuple[dict[str, float], dict[str, Any] | None]:
        """Backward every task's scaled objective and leave the step's gradient in `.grad`.

        A task's batch may be a list of micro-batches (`gradient_accumulation_steps`): their gradients add up in
        its row of the buffer before the method aggregates once.

        `scaler` (fp16): every objective is scaled by the `torch.amp.GradScaler`, the buffer is unscaled before
        it is aggregated (aggregators such as Nash-MTL are not scale-equivariant) and the update is written back
        scaled, so that `scaler.unscale_` finds `.grad` as it expects; a buffer that overflowed writes NaN, so
        that the scaler skips the step.

        Returns each task's mean per-sample loss (averaged over the ranks) and, with `diagnostics` and a
        filled buffer, the gradient statistics of `aggregators.diagnose` (and a loss weighting's `task_weight`).
        """
        micro = {t: b if isinstance(b, list) else [b] for t, b in batches.items()}  # gradient accumulation
        buffer = self.buffer if self.uses_buffer(len(batches), diagnostics) else None
        if buffer is not None:
            touched = None
            if buffer.embedding is not None:
                ids = torch.cat([x["input_ids"].view(-1) for bs in micro.values() for b in bs for x in b["inputs"]])
                touched = self.ranks.union_rows(ids, self.vocab_size)
            buffer.begin_step(touched)
        losses = {}
        for index, (task, parts) in enumerate(micro.items()):
            total, samples = 0.0, 0
            for batch in parts:  # a task's micro-batches accumulate into its .grad, then into its buffer row
                loss, task_objective = objective(task, batch)
                scaled = task_objective * loss_scale[task]
                if self.weighting is not None:  # a weight per task on its loss (of all ranks' batches)
                    scaled = self.weighting.weigh(task, self.ranks.with_mean_value(scaled))
                if scaler is not None:  # fp16
                    scaled = scaler.scale(scaled)
                scaled.backward()  # frees this batch's graph: peak memory is one (micro-)batch
                total, samples = total + loss.item(), samples + len(batch["labels"])
            losses[task] = total / samples
            if buffer is not None:
                buffer.collect(index)
        losses = self.ranks.share(losses, buffer, self.model)  # ddp_mode exact: one all-reduce of the buffer
        weights = {"task_weight": self.weighting.weights()} if diagnostics and self.weighting is not None else {}
        if buffer is None:
            return losses, weights or None
        overflowed, grad_scale = False, scaler.get_scale() if scaler is not None else 1.0
        if scaler is not None:  # fp16: aggregate the true gradients
            overflowed = not bool(torch.isfinite(buffer.grads).all())
            buffer.grads.div_(grad_scale)
        if self.per_layer:
            update = aggregate_per_layer(self.aggregate, buffer.grads, buffer.layer_groups(), self.generator)
        else:
            update = self.aggregate(buffer.grads, generator=self.generator)
        stats = {**diagnose(buffer.grads, update, list(batches)), **weights} if diagnostics and not overflowed \
            else None
        if overflowed:
            update = torch.full_like(update, float("nan"))
        update = self.ranks.mean_update(update)  # ddp_mode local: the mean of the ranks' updates
        buffer.write(update * grad_scale if scaler is not None else update)
        return losses, stats

    def after_step(self, losses: dict[str, float]) -> None:
        """Called after each optimizer step that was taken (FAMO moves its task weights)."""
        if self.weighting is not None:
            self.weighting.after_step(losses)

    def state_dict(self) -> dict[str, Any]:
        """State kept outside the model (FAMO's logits and their Adam state); uncertainty's lives in the model."""
        return {"loss_weighting": self.weighting.state_dict()} if isinstance(self.weighting, FAMO) else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "loss_weighting" in state and isinstance(self.weighting, FAMO):
            self.weighting.load_state_dict(state["loss_weighting"])


def make_method(name: str, model: nn.Module, tasks: list[str], ranks: Ranks = ONE_PROCESS, seed: int = 0,
                surgery_scope: str = "global") -> Method:
    """The Method called `name` over `model`'s shared encoder (any of `METHODS`); a trainable loss weighting is
    attached to the model as `model.loss_weighting`, so the optimizer and checkpoints include it."""
    method = Method(name, model, tasks, ranks, seed, per_layer=surgery_scope == "per-layer")
    if method.loss_module is not None:
        model.loss_weighting = method.loss_module
    return method


def plain_objective(model: nn.Module, device: torch.device, sts_loss: str = "mse") -> TaskObjective:
    """The task loss of a MultiTaskModel on a collated batch, as its own objective (no SMART, no autocast)."""
    from mtbert.model import task_loss

    def objective(task: str, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        inputs = [{k: v.to(device) for k, v in x.items()} for x in batch["inputs"]]
        loss = task_loss(model.specs[task], model(task, inputs).float(), batch["labels"].to(device), sts_loss)
        return loss, loss

    return objective
