"""The Method object: how one training step turns each task's loss into the parameters' `.grad`.

Three kinds of method, one interface (`backward`, `after_step`, `state_dict` / `load_state_dict`):

- summed loss (`sum`, `single`): each task's scaled loss is backpropagated and the gradients add up;
- loss weighting (`uncertainty`, `famo`; weighting.py): the same, with a weight per task on its loss;
- gradient surgery (`pcgrad`, `cagrad`, ...; aggregators.py): the aggregator combines the tasks' gradients of
  the shared encoder, globally or per encoder layer.

A Method scales (and weighs) each task's loss and runs its backward passes; everything that happens to the
per-task gradients afterwards (the T x P buffer, the touched embedding rows, the averaging over ranks, float16
unscaling, the aggregation) is the one surgery engine's, `GradientSurgery` (surgery.py), which the loss-summing
methods run with the `sum` aggregator. It is used whenever the step needs per-task rows: for surgery, on several
processes (the rows are what the ranks average) and when a step logs diagnostics for several tasks; a plain
summed step on one process just lets the gradients add up in `.grad`. `make_method` is the only code that reads
`cfg.method`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from mtbert.data.groups import GroupBatch
from mtbert.distributed import ONE_PROCESS, Ranks
from mtbert.errors import ConfigError, MtbertError
from mtbert.methods.aggregators import AGGREGATORS, sum_rows
from mtbert.methods.representation import RepresentationSurgery
from mtbert.methods.surgery import GradientSurgery, PerTaskGradients, check_options, make_method_aggregator
from mtbert.methods.weighting import FAMO, LOSS_WEIGHTINGS, UncertaintyWeighting, make_weighting

SUMMED_LOSS = ("sum", "single")
METHODS = (*SUMMED_LOSS, *(m for m in AGGREGATORS if m != "sum"), *LOSS_WEIGHTINGS)

# (task, batch) -> (the task's summed loss for reporting, the objective to backpropagate)
TaskObjective = Callable[[str, dict], tuple[torch.Tensor, torch.Tensor]]
# a batch of tasks that share their input -> (the hidden states every head read, {task: (loss, objective)}) of ONE
# encoder forward pass
GroupObjective = Callable[[GroupBatch], tuple[list[torch.Tensor], dict[str, tuple[torch.Tensor, torch.Tensor]]]]


def check_method_options(method: str, options: Mapping[str, Any] | None) -> None:
    """Raise ConfigError (`method_options: ...`) unless `method` takes each of `options` with a value of the right
    type: an aggregator's keywords (`cagrad`: `c`), FAMO's (`lr`, `weight_decay`, `eps`), none for the others."""
    if not options:
        return
    if not isinstance(options, Mapping):
        raise ConfigError(f"method_options: must be a mapping of option names to values, not {options!r}")
    try:
        if method == "famo":
            check_options(method, FAMO.__init__, options, skip=("tasks",))
        elif method in AGGREGATORS and method != "sum":
            make_method_aggregator(method, options)  # the public API's own check
        else:
            check_options(method, lambda: None, options)
    except ConfigError as err:
        raise ConfigError(f"method_options: {err}") from None


class Method:
    """One training method over a model's shared parameters (see the module docstring).

    `options`: the method's keyword options (`method_options` of the config), checked as `check_method_options`
    does. `buffer_dtype`: the storage of the engine's per-task rows (`surgery_buffer_dtype`: float32 or bfloat16).
    """

    def __init__(self, name: str, model: nn.Module, tasks: list[str], ranks: Ranks = ONE_PROCESS, seed: int = 0,
                 per_layer: bool = False, options: Mapping[str, Any] | None = None,
                 representation: bool = False, buffer_dtype: str = "float32") -> None:
        check_method_options(name, options)
        options = dict(options or {})
        self.name = name
        self.tasks = list(tasks)
        self.ranks = ranks
        self.aggregating = name in AGGREGATORS and name != "sum"
        self.weighting: UncertaintyWeighting | FAMO | None = make_weighting(name, self.tasks,
                                                                           **({} if self.aggregating else options))
        self.model = model
        encoder = getattr(model, "encoder", model)
        embedding = encoder.get_input_embeddings().weight if hasattr(encoder, "get_input_embeddings") else None
        shared = [(n, p) for n, p in encoder.named_parameters() if p.requires_grad]
        in_shared = {id(p) for _, p in shared}
        others = [p for p in model.parameters() if p.requires_grad and id(p) not in in_shared]  # the heads
        if self.loss_module is not None:  # attached to the model by make_method, averaged like a head
            others += [p for p in self.loss_module.parameters() if all(p is not q for q in others)]
        self.surgery = GradientSurgery(shared, name if self.aggregating else "sum", seed, embedding=embedding,
                                       scope="per-layer" if per_layer else "global", other_params=others,
                                       distributed=ranks.distributed, ddp_mode=ranks.ddp_mode,
                                       buffer_dtype=buffer_dtype,
                                       **(options if self.aggregating else {}))
        # optional: surgery on the tasks' gradients of the encoder's output (methods/representation.py)
        self.representation = RepresentationSurgery(self.surgery.aggregate, self.surgery.generator, others) \
            if representation else None

    @property
    def generator(self) -> torch.Generator:
        """The generator of the method's random choices (PCGrad's orders); checkpointed."""
        return self.surgery.generator

    @property
    def buffer(self) -> PerTaskGradients:
        """The engine's per-task buffer."""
        return self.surgery.buffer

    @property
    def loss_module(self) -> nn.Module | None:
        """A weighting with trainable parameters (uncertainty's log-variances), trained with the model."""
        return self.weighting if isinstance(self.weighting, nn.Module) else None

    def uses_buffer(self, num_tasks: int, diagnostics: bool) -> bool:
        """Whether a step runs through the surgery engine's per-task rows (else the gradients add up in `.grad`)."""
        return self.aggregating or self.ranks.distributed or (diagnostics and num_tasks > 1)

    def backward(self, batches: dict[str, Any], loss_scale: dict[str, float], objective: TaskObjective,
                 diagnostics: bool = False, scaler: torch.amp.GradScaler | None = None,
                 group_objective: GroupObjective | None = None) -> tuple[dict[str, float], dict[str, Any] | None]:
        """Backward every task's scaled objective and leave the step's gradient in `.grad`.

        `batches`: a batch per stream of examples: a task's own batch (a dict, keyed by the task), or a `GroupBatch`
        of tasks that share their input (keyed by the group; `group_objective` runs its one forward pass). A
        stream's batch may be a list of micro-batches (`gradient_accumulation_steps`): their gradients add up in
        `.grad` and are collected into the task's row, and the method aggregates once. The tasks of a group are
        backpropagated one by one through their shared forward (the graph kept for all but the last), so that each
        task's row is its exact gradient; a summed step with no buffer backpropagates their sum once.

        `scaler` (fp16): every objective is scaled by the `torch.amp.GradScaler`; the engine aggregates the
        unscaled rows and writes the update back scaled (`GradientSurgery.apply`).

        Returns each task's mean per-sample loss (averaged over the ranks) and, with `diagnostics` and a
        filled buffer, the gradient statistics of `aggregators.diagnose` (and a loss weighting's `task_weight`).
        """
        micro = {s: b if isinstance(b, list) else [b] for s, b in batches.items()}  # gradient accumulation
        if any(isinstance(b[0], GroupBatch) for b in micro.values()) and group_objective is None:
            raise MtbertError("Method.backward: a batch of an input_group needs group_objective")
        if self.representation is not None:
            return self._representation_backward(micro, loss_scale, objective, diagnostics, scaler, group_objective)
        num_tasks = sum(len(b[0].tasks) if isinstance(b[0], GroupBatch) else 1 for b in micro.values())
        surgery = self.surgery if self.uses_buffer(num_tasks, diagnostics) else None
        if surgery is not None and surgery.embedding is not None:
            surgery.begin_step([x["input_ids"] for bs in micro.values() for b in bs for x in _inputs(b)])
        totals: dict[str, list[float]] = {}
        for stream, parts in micro.items():
            for batch in parts:  # a task's micro-batches accumulate into its .grad, then into its row
                if isinstance(batch, GroupBatch):  # one forward for the group's tasks
                    _, results = group_objective(batch)
                    sizes = {t: len(b["labels"]) for t, b in batch.tasks.items()}
                else:
                    results, sizes = {stream: objective(stream, batch)}, {stream: len(batch["labels"])}
                scaled = {t: self._scaled(t, obj, loss_scale, scaler) for t, (_, obj) in results.items()}
                if surgery is None or not isinstance(batch, GroupBatch):
                    sum(scaled.values()).backward()  # frees this batch's graph: peak memory is one (micro-)batch
                else:  # each task's exact gradient from the shared forward: the graph is kept for the next task
                    for i, (task, value) in enumerate(scaled.items()):
                        value.backward(retain_graph=i < len(scaled) - 1)
                        surgery.collect(task, accumulate=True)
                for task, (loss, _) in results.items():
                    total = totals.setdefault(task, [0.0, 0])
                    total[0], total[1] = total[0] + loss.item(), total[1] + sizes[task]
            if surgery is not None and not isinstance(parts[0], GroupBatch):
                surgery.collect(stream)
        losses = self.ranks.mean_values({t: total / samples for t, (total, samples) in totals.items()})
        weights = {"task_weight": self.weighting.weights()} if diagnostics and self.weighting is not None else {}
        if surgery is None:
            return losses, weights or None
        stats = surgery.apply(diagnostics=diagnostics, scaler=scaler)
        return losses, ({**stats, **weights} if stats is not None else None)

    def _scaled(self, task: str, task_objective: torch.Tensor, loss_scale: dict[str, float],
                scaler: torch.amp.GradScaler | None) -> torch.Tensor:
        """A task's objective as backpropagated: times its loss scale, its weight (a loss weighting's, of all
        ranks' batches) and the float16 scale."""
        scaled = task_objective * loss_scale[task]
        if self.weighting is not None:
            scaled = self.weighting.weigh(task, self.ranks.with_mean_value(scaled))
        return scaler.scale(scaled) if scaler is not None else scaled

    def _representation_backward(self, micro: dict[str, list[Any]], loss_scale: dict[str, float],
                                 objective: TaskObjective, diagnostics: bool, scaler: torch.amp.GradScaler | None,
                                 group_objective: GroupObjective | None
                                 ) -> tuple[dict[str, float], dict[str, Any] | None]:
        """`surgery_scope: representation`: every batch's forward (a separate task's batch is a group of one),
        each task's gradient of the hidden states through its head, the method on them, one backward per batch
        (methods/representation.py). On several ranks the encoder's and heads' gradients are then averaged."""
        if group_objective is None:
            raise MtbertError("Method.backward: surgery_scope representation needs group_objective")
        surgery = self.surgery if self.ranks.distributed else None
        if surgery is not None and surgery.embedding is not None:
            surgery.begin_step([x["input_ids"] for bs in micro.values() for b in bs for x in _inputs(b)])
        totals: dict[str, list[float]] = {}
        for stream, parts in micro.items():
            for batch in parts:
                group = batch if isinstance(batch, GroupBatch) else GroupBatch(batch["inputs"], {stream: batch})
                hidden, results = group_objective(group)
                self.representation.add(hidden, {t: self._scaled(t, obj, loss_scale, scaler)
                                                 for t, (_, obj) in results.items()})
                for task, (loss, _) in results.items():
                    total = totals.setdefault(task, [0.0, 0])
                    total[0], total[1] = total[0] + loss.item(), total[1] + len(group.tasks[task]["labels"])
        stats = self.representation.backward(diagnostics, float(scaler.get_scale()) if scaler is not None else 1.0,
                                             average_ranks=surgery is not None and self.ranks.ddp_mode == "exact")
        if surgery is not None:  # the mean over the ranks of every gradient (one row: no aggregation)
            surgery.collect("representation")
            surgery.apply(diagnostics=False, scaler=scaler, aggregator=sum_rows)
        losses = self.ranks.mean_values({t: total / samples for t, (total, samples) in totals.items()})
        weights = {"task_weight": self.weighting.weights()} if diagnostics and self.weighting is not None else {}
        return losses, ({**stats, **weights} if stats is not None else (weights or None))

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
                surgery_scope: str = "global", options: Mapping[str, Any] | None = None,
                buffer_dtype: str = "float32") -> Method:
    """The Method called `name` over `model`'s shared encoder (any of `METHODS`, with its `options`; `surgery_scope`
    global, per-layer or representation; `buffer_dtype`: its per-task rows' storage); a trainable loss weighting is
    attached to the model as `model.loss_weighting`, so the optimizer and checkpoints include it."""
    method = Method(name, model, tasks, ranks, seed, per_layer=surgery_scope == "per-layer", options=options,
                    representation=surgery_scope == "representation", buffer_dtype=buffer_dtype)
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


def plain_group_objective(model: nn.Module, device: torch.device, sts_loss: str = "mse") -> GroupObjective:
    """The task losses of a MultiTaskModel on a `GroupBatch` from one encoder forward pass, as their own objectives
    (no SMART, no autocast), with the hidden states the heads read."""
    from mtbert.model import task_loss

    def objective(batch: GroupBatch) -> tuple[list[torch.Tensor], dict[str, tuple[torch.Tensor, torch.Tensor]]]:
        inputs = [{k: v.to(device) for k, v in x.items()} for x in batch.inputs]
        hidden, outputs = model.forward_group(list(batch.tasks), inputs)
        losses = {t: task_loss(model.specs[t], outputs[t].float(), b["labels"].to(device), sts_loss)
                  for t, b in batch.tasks.items()}
        return hidden, {t: (loss, loss) for t, loss in losses.items()}

    return objective


def _inputs(batch: Any) -> list[dict[str, torch.Tensor]]:
    """The encoder inputs of a task's batch or of a group's."""
    return batch.inputs if isinstance(batch, GroupBatch) else batch["inputs"]
