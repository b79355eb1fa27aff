"""LoRA adapters, frozen embeddings and layers, gradient checkpointing: on the tiny random BERT (and a tiny MPNet)."""

from __future__ import annotations

import copy

import pytest
import torch
from safetensors.torch import load_file
from transformers import BertModel, MPNetConfig, MPNetModel

from mtbert.config import build_config
from mtbert.errors import ConfigError
from mtbert.methods.pertask import PerTaskGradients
from mtbert.model import MultiTaskModel, load_encoder, task_loss
from mtbert.model.adapters import (
    ADAPTER_DIR,
    apply_lora,
    enable_gradient_checkpointing,
    freeze_embeddings,
    freeze_layers,
    has_lora,
    merge_lora,
)

TEXTS = ["good movie very fun", "awful dull plot", "the actor was great", "not a good film at all"]


def _model(tiny_config) -> tuple[MultiTaskModel, dict, object]:
    cfg = build_config({**tiny_config, "dropout": 0.0})
    torch.manual_seed(0)
    encoder, tokenizer = load_encoder(cfg.model_name_or_path, 0.0)
    model = MultiTaskModel(encoder, cfg.task_specs(), dropout=0.0)
    inputs = dict(tokenizer(TEXTS, padding=True, return_tensors="pt"))
    return model, inputs, tokenizer


def _train(model: MultiTaskModel, inputs: dict, steps: int = 2, lr: float = 1e-2) -> None:
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=lr, weight_decay=0.0)
    labels = torch.tensor([4.0, 0.0, 3.0, 1.0])
    for _ in range(steps):
        optimizer.zero_grad()
        task_loss(model.specs["sst"], model("sst", [inputs]), labels).backward()
        optimizer.step()


def _snapshot(model: MultiTaskModel) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _changed(model: MultiTaskModel, before: dict[str, torch.Tensor]) -> set[str]:
    return {n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])}


@torch.no_grad()
def _outputs(model: MultiTaskModel, inputs: dict) -> torch.Tensor:
    model.eval()
    return model("sst", [inputs])


def test_lora_trains_only_the_adapters_and_the_heads(tiny_config):
    model, inputs, _ = _model(tiny_config)
    apply_lora(model, {"r": 4, "lora_alpha": 8})
    assert has_lora(model.encoder)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    lora = {n for n in trainable if "lora_" in n}
    assert trainable == lora | {n for n in trainable if n.startswith("heads.")}
    # the default targets of a BERT: query and value of each of the 2 layers, an A and a B matrix each
    assert len(lora) == 8 and all((".query." in n or ".value." in n) for n in lora)
    shared = model.shared_parameters()
    assert sum(p.numel() for p in shared) == 2 * 2 * 2 * 4 * 32  # layers x modules x (A, B) x r x hidden
    buffer = PerTaskGradients(shared, 3, embedding=None)
    assert buffer.dense_size == sum(p.numel() for p in shared)

    before = _snapshot(model)
    _train(model, inputs)
    changed = _changed(model, before)
    assert changed <= trainable  # the base encoder did not move
    assert lora <= changed and any(n.startswith("heads.sst.") for n in changed)


def test_lora_adapters_are_saved_and_loaded_with_the_model(tiny_config, tiny_model_dir, tmp_path):
    model, inputs, tokenizer = _model(tiny_config)
    apply_lora(model, {"r": 4, "lora_dropout": 0.1})
    _train(model, inputs)
    model.save_pretrained(tmp_path / "best", tokenizer)

    assert (tmp_path / "best" / ADAPTER_DIR / "adapter_model.safetensors").is_file()
    # encoder/ is the plain base model: the same tensors, under the same names, as the tiny BERT it came from
    saved = load_file(str(tmp_path / "best" / "encoder" / "model.safetensors"))
    original = load_file(str(tiny_model_dir / "model.safetensors"))
    assert set(saved) == set(original)
    assert all(torch.equal(saved[k], original[k]) for k in saved)

    loaded = MultiTaskModel.from_pretrained(tmp_path / "best")
    assert has_lora(loaded.encoder)
    assert torch.equal(_outputs(loaded, inputs), _outputs(model, inputs))
    assert ({n for n, p in loaded.named_parameters() if p.requires_grad}
            == {n for n, p in model.named_parameters() if p.requires_grad})


def test_merged_lora_gives_the_outputs_of_the_adapted_model(tiny_config):
    model, inputs, _ = _model(tiny_config)
    base = copy.deepcopy(model)
    apply_lora(model, {"r": 4})
    _train(model, inputs, steps=3)
    for name, head in model.heads.items():  # compare the encoders alone: the same heads on both
        base.heads[name].load_state_dict(head.state_dict())
    adapted = _outputs(model, inputs)
    assert not torch.allclose(adapted, _outputs(base, inputs), atol=1e-4)  # the adapters do change the outputs
    merge_lora(model)
    assert not has_lora(model.encoder) and isinstance(model.encoder, BertModel)
    assert not any("lora_" in n for n, _ in model.named_parameters())
    torch.testing.assert_close(_outputs(model, inputs), adapted, atol=1e-5, rtol=1e-5)


def test_lora_settings_are_checked(tiny_config):
    model, _, _ = _model(tiny_config)
    with pytest.raises(ConfigError, match=r"^lora\.rank: unknown key"):
        apply_lora(model, {"rank": 4})
    with pytest.raises(ConfigError, match=r"^lora\.r: must be a positive integer"):
        apply_lora(model, {"r": 0})
    with pytest.raises(ConfigError, match=r"^lora\.target_modules: "):
        apply_lora(model, {"target_modules": ["no_such_module"]})
    assert not has_lora(model.encoder)


def _tiny_mpnet(tiny_config) -> MultiTaskModel:
    torch.manual_seed(0)
    config = MPNetConfig(vocab_size=200, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=64, hidden_dropout_prob=0.0,
                         attention_probs_dropout_prob=0.0)
    return MultiTaskModel(MPNetModel(config), build_config(tiny_config).task_specs(), dropout=0.0)


def test_mpnet_lora_targets_q_and_v_and_layers_freeze_by_index(tiny_config):
    model = _tiny_mpnet(tiny_config)
    apply_lora(model, {})
    lora = {n for n, p in model.named_parameters() if p.requires_grad and "lora_" in n}
    assert len(lora) == 8 and all((".attn.q." in n or ".attn.v." in n) for n in lora)

    with pytest.raises(ConfigError, match="^gradient_checkpointing: MPNetModel does not support gradient check"):
        enable_gradient_checkpointing(model)

    model = _tiny_mpnet(tiny_config)
    freeze_embeddings(model)
    freeze_layers(model, 1)
    frozen = {n for n, p in model.encoder.named_parameters() if not p.requires_grad}
    assert frozen == {n for n, _ in model.encoder.named_parameters()
                      if n.startswith(("embeddings.", "encoder.layer.0."))}
    assert any(n.startswith("encoder.layer.1.") for n, _ in model.encoder.named_parameters() if n not in frozen)


def test_frozen_embeddings_and_lowest_layers_stay_unchanged_by_a_step(tiny_config):
    model, inputs, _ = _model(tiny_config)
    freeze_embeddings(model)
    freeze_layers(model, 1)
    frozen = {f"encoder.{n}" for n, p in model.encoder.named_parameters() if not p.requires_grad}
    assert frozen and all(n.startswith(("encoder.embeddings.", "encoder.encoder.layer.0.")) for n in frozen)
    assert any(n.startswith("encoder.embeddings.word_embeddings") for n in frozen)
    assert all(p.requires_grad for p in model.shared_parameters())
    assert model.encoder.get_input_embeddings().weight not in set(model.shared_parameters())

    before = _snapshot(model)
    _train(model, inputs)
    changed = _changed(model, before)
    assert not changed & frozen
    assert any(n.startswith("encoder.encoder.layer.1.") for n in changed)
    with pytest.raises(ConfigError, match=r"^freeze_layers: must be an integer from 0 to the encoder's 2 layers"):
        freeze_layers(model, 3)


def test_gradient_checkpointing_gives_the_same_gradients(tiny_config):
    model, inputs, _ = _model(tiny_config)
    checkpointed = copy.deepcopy(model)
    enable_gradient_checkpointing(checkpointed)
    assert checkpointed.encoder.is_activation_checkpointing and not model.encoder.is_activation_checkpointing
    labels = torch.tensor([4.0, 0.0, 3.0, 1.0])
    grads, saved = [], []
    for m in (model, checkpointed):
        m.train()
        count = [0]

        def pack(tensor, count=count):
            count[0] += 1
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            loss = task_loss(m.specs["sst"], m("sst", [inputs]), labels)
        loss.backward()
        saved.append(count[0])
        grads.append({n: p.grad for n, p in m.named_parameters() if p.grad is not None})
    assert saved[1] < saved[0] / 2  # the checkpointed forward keeps far fewer activations for the backward
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 10
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, atol=1e-6, rtol=1e-5, msg=name)


def test_gradient_checkpointing_works_under_lora(tiny_config):
    model, inputs, _ = _model(tiny_config)
    apply_lora(model, {"r": 4})
    enable_gradient_checkpointing(model)
    before = _snapshot(model)
    _train(model, inputs)
    assert any("lora_B" in n for n in _changed(model, before))


def test_pcgrad_under_lora_and_frozen_layers_works_on_the_trainable_parameters_only(tiny_config):
    from mtbert.data import MultiTaskSampler, collate, load_task_data
    from mtbert.methods.method import make_method, plain_objective

    cfg = build_config({**tiny_config, "dropout": 0.0})
    model, _, tokenizer = _model(tiny_config)
    apply_lora(model, {"r": 4})
    freeze_layers(model, 1)  # also freezes layer 0's adapters
    specs = cfg.task_specs()
    data = load_task_data(specs, cfg.resolved_data_dir(), tokenizer, 32, "cross", splits=("train",))
    sampler = MultiTaskSampler({s.name: len(data[s.name].train) for s in specs}, seed=0)
    batches = {s.name: collate(data[s.name].train, sampler.draw(s.name, 4), 0) for s in specs}
    method = make_method("pcgrad", model, list(batches))
    trained = [p for p in model.encoder.parameters() if p.requires_grad]
    assert method.buffer.embedding is None and method.buffer.dense_size == sum(p.numel() for p in trained)
    assert method.buffer.dense_size == 2 * 2 * 4 * 32  # layer 1's query and value adapters (A and B)

    model.train()
    method.backward(batches, {t: 0.25 for t in batches}, plain_objective(model, torch.device("cpu")))
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad <= {n for n, p in model.named_parameters() if p.requires_grad}
    assert any("layer.1." in n and "lora_B" in n for n in with_grad)
