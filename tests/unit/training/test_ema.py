"""`ema_decay`: the weights' exponential moving average, updated after every optimizer step, is what is evaluated
and saved as best/; checkpoints keep it, so a resumed run continues it exactly."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from mtbert.config import build_config
from mtbert.errors import ConfigError, MtbertError
from mtbert.training.weight_average import WeightAverage, ema_decay_at


def test_the_average_follows_the_formula_with_its_warm_up():
    layer = torch.nn.Linear(3, 2)
    average = WeightAverage(layer, decay=0.9)
    expected = None
    for step in range(30):
        with torch.no_grad():
            layer.weight.add_(float(step))  # the trained weights move
        if expected is None:  # the first update copies the weights
            expected = layer.weight.detach().clone()
        else:
            decay = ema_decay_at(0.9, average.updates)
            expected = decay * expected + (1 - decay) * layer.weight.detach()
        average.update(layer)
    torch.testing.assert_close(average.model.weight, expected)
    assert average.updates == 30 and not average.model.weight.requires_grad
    assert ema_decay_at(0.9, 1) == pytest.approx(2 / 11) and ema_decay_at(0.9, 1000) == 0.9


def test_the_count_of_updates_stays_on_the_host_whatever_the_models_device():
    """Reading the count each step (the decay's warm-up) is no device sync: it is a CPU tensor even when the
    model and its average live elsewhere (here the meta device, which holds no values at all)."""
    average = WeightAverage(torch.nn.Linear(3, 2, device="meta"), decay=0.9)
    assert average.model.weight.device.type == "meta"
    assert average.averaged.n_averaged.device.type == "cpu" and average.updates == 0
    on_cpu = WeightAverage(torch.nn.Linear(3, 2), decay=0.9)
    assert on_cpu.follow(torch.nn.Linear(3, 2, device="meta")).weight.device.type == "meta"  # where the model went
    assert on_cpu.averaged.n_averaged.device.type == "cpu"


def test_ema_decay_must_be_between_0_and_1():
    for bad in (0.0, 1.0, 1.5, -0.1):
        with pytest.raises(ConfigError, match="ema_decay: must be between 0 and 1"):
            build_config({"ema_decay": bad})
    assert build_config({"ema_decay": 0.99}).ema_decay == 0.99 and build_config({}).ema_decay is None


def _weights(model_dir):
    from mtbert.model import MultiTaskModel

    return MultiTaskModel.from_pretrained(model_dir).state_dict()


def test_best_is_the_average_and_a_resumed_run_continues_it_exactly(tiny_config, tmp_path):
    from helpers.runs import assert_same_run

    from mtbert.training.run import train

    settings = {**tiny_config, "method": "pcgrad", "ema_decay": 0.5, "max_steps": 6, "save_steps": 2,
                "save_total_limit": None, "eval_strategy": "steps", "eval_steps": 2}
    whole = tmp_path / "whole"
    train(build_config({**settings, "output_dir": str(whole)}))
    best_step = json.loads((whole / "results.json").read_text())["best_step"]
    checkpoint = whole / f"checkpoint-{best_step}"
    averaged, trained = load_file(str(checkpoint / "ema.safetensors")), load_file(str(checkpoint / "model.safetensors"))
    assert json.loads((checkpoint / "trainer_state.json").read_text())["ema_updates"] == best_step
    best = _weights(whole / "best")
    shared = [k for k in best if k in averaged]
    assert len(shared) > 10
    for key in shared:
        torch.testing.assert_close(best[key], averaged[key], atol=1e-6, rtol=0, msg=key)
    assert any(not torch.equal(averaged[k], trained[k]) for k in shared)  # the average is not the trained weights

    again = tmp_path / "again"
    shutil.copytree(whole, again)
    (again / "results.json").unlink()
    for name in ("checkpoint-4", "checkpoint-6"):
        shutil.rmtree(again / name)
    train(build_config({**settings, "output_dir": str(again)}), resume_from_checkpoint=str(again / "checkpoint-2"))
    assert_same_run(whole, again)
    first, second = (load_file(str(run / "checkpoint-6" / "ema.safetensors")) for run in (whole, again))
    for key in first:
        torch.testing.assert_close(second[key], first[key], atol=1e-6, rtol=0, msg=key)


def test_resuming_with_ema_decay_from_a_checkpoint_without_an_average_says_so(tiny_config, tmp_path):
    from mtbert.training.run import train

    settings = {**tiny_config, "max_steps": 2, "save_steps": 2, "save_total_limit": None}
    train(build_config(settings))
    run = tiny_config["output_dir"]
    with pytest.raises(MtbertError, match="holds no moving average of the weights"):
        train(build_config({**settings, "ema_decay": 0.9, "max_steps": 4}),
              resume_from_checkpoint=f"{run}/checkpoint-2")
