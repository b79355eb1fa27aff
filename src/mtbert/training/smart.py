"""SMART's smoothness-inducing regulariser (Jiang et al. 2020, https://arxiv.org/abs/1911.03437), without its
Bregman proximal term: one ascent step (T = 1) and a perturbation bound equal to the step (epsilon = eta).

A task batch's input word embeddings get Gaussian noise (std `noise`), the noise takes one ascent step of size
`step_size` along the gradient of the divergence between the clean and the noisy outputs (normalised to
max-norm 1 per token), and is clipped to the box of half-width `step_size`. The symmetric divergence at that
point, times `weight`, is added to the task's loss: the model learns outputs that change little in a small
neighbourhood of each input. It costs two more forward passes and two more backward passes per task batch.

Divergences: symmetric KL of the class distributions (a binary head's logit is read as two classes), and the
squared difference for regression heads.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mtbert.model import MultiTaskModel
from mtbert.tasks import TaskSpec


@dataclass(frozen=True)
class Smoothness:
    """SMART's settings: the penalty's weight, the ascent step (and perturbation bound) and the initial noise."""

    weight: float
    step_size: float = 1e-3
    noise: float = 1e-5


def smart_penalty(model: MultiTaskModel, task: str, inputs: list[dict[str, torch.Tensor]], outputs: torch.Tensor,
                  smoothness: Smoothness) -> torch.Tensor:
    """The SUM over the batch of the symmetric divergence between `outputs` and the outputs at the adversarial
    perturbation of the inputs' word embeddings (not yet times the weight)."""
    spec = model.specs[task]
    word_embeddings = model.encoder.get_input_embeddings()
    embeds = [word_embeddings(x["input_ids"]) for x in inputs]
    noises = [(torch.randn_like(e) * smoothness.noise).requires_grad_() for e in embeds]
    noisy = model(task, _perturbed(inputs, embeds, noises))
    ascent = divergence(spec, noisy, outputs.detach()).sum()
    grads = torch.autograd.grad(ascent, noises)
    bound = smoothness.step_size
    adversarial = []
    for noise, grad in zip(noises, grads, strict=True):
        # each token's step has max-norm 1, however small its gradient (tokens with none, padding, stay put)
        direction = grad / grad.abs().amax(dim=-1, keepdim=True).clamp_min(1e-30)
        adversarial.append((noise + smoothness.step_size * direction).clamp(-bound, bound).detach())
    perturbed = model(task, _perturbed(inputs, embeds, adversarial))
    both_ways = divergence(spec, perturbed, outputs.detach()) + divergence(spec, outputs, perturbed.detach())
    return both_ways.sum()


def _perturbed(inputs: list[dict[str, torch.Tensor]], embeds: list[torch.Tensor],
               noises: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    """The inputs with `inputs_embeds` = word embeddings + noise in place of `input_ids`."""
    return [{**{k: v for k, v in x.items() if k != "input_ids"}, "inputs_embeds": e + n}
            for x, e, n in zip(inputs, embeds, noises, strict=True)]


def divergence(spec: TaskSpec, outputs: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Per-example divergence of the outputs from the reference, as the task's kind defines it: KL(reference ||
    outputs) of the predicted distributions, or the squared difference for regression."""
    return spec.task_kind.divergence(spec, outputs, reference)
