"""Packed batches give the padded batches' outputs and gradients (tiny random BERT and MPNet)."""

from __future__ import annotations

import random

import pytest
import torch
from transformers import BertConfig, BertModel, MPNetConfig, MPNetModel

from mtbert.data.encoding import EncodedSet, collate, collate_packed
from mtbert.model import MultiTaskModel, task_loss
from mtbert.model.packing import pack_rows, packed_tokens, packing_support, unpack_inputs
from mtbert.tasks import BUILTIN_TASKS

VOCAB = 120
LENGTHS = [9, 3, 7, 12, 5, 2, 12, 4, 6]


def tiny_encoder(kind: str):
    torch.manual_seed(0)
    common = {"vocab_size": VOCAB, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
              "intermediate_size": 64, "max_position_embeddings": 64, "hidden_dropout_prob": 0.0,
              "attention_probs_dropout_prob": 0.0}
    if kind == "mpnet":
        return MPNetModel(MPNetConfig(**common))
    implementation = "eager" if kind == "bert-eager" else "sdpa"
    return BertModel(BertConfig(**common, attn_implementation=implementation))


def random_set(task: str, architecture: str, pad_id: int) -> EncodedSet:
    """Random token ids (never the padding id) with the layout encode_examples gives each architecture."""
    spec = BUILTIN_TASKS[task]
    rng = random.Random(1)
    n_inputs = 2 if spec.is_pair and architecture != "cross" else 1

    def seq(n: int) -> list[int]:
        return [rng.choice([t for t in range(3, VOCAB) if t != pad_id]) for _ in range(n)]

    features, types, labels = [], [], []
    for i, n in enumerate(LENGTHS):
        if n_inputs == 2:
            features.append([seq(n), seq(LENGTHS[-1 - i])])
            types.append([[0] * n, [0] * LENGTHS[-1 - i]])
        else:
            features.append([seq(n)])
            types.append([[0] * (n // 2) + [1] * (n - n // 2)] if spec.is_pair else [[0] * n])
        labels.append(float(rng.randint(0, spec.num_labels - 1)) if not spec.is_regression else rng.uniform(0, 5))
    return EncodedSet(spec=spec, ids=[str(i) for i in range(len(LENGTHS))], features=features, token_types=types,
                      labels=labels)


def assert_examples_laid_out(packed: dict) -> None:
    """Each example's tokens are contiguous, with positions 0..n-1 and its own example id."""
    for i, n in enumerate(LENGTHS):
        flat = packed["unpack_index"][i, :n]
        assert torch.equal(flat, torch.arange(int(flat[0]), int(flat[0]) + n))
        assert packed["position_ids"].view(-1)[flat].tolist() == list(range(n))
        assert (packed["example_ids"].view(-1)[flat] == i).all()


def test_layout_rows_positions_and_unpacking_match_collate():
    assert pack_rows([6, 4, 2, 3]) == [[0], [1, 2], [3]]
    encoded = random_set("sst", "cross", pad_id=0)
    indices = list(range(len(LENGTHS)))
    packed = collate_packed(encoded, indices, 0)["inputs"][0]
    rows, width = packed["input_ids"].shape
    assert width == max(LENGTHS) and rows < len(LENGTHS)
    real, processed = packed_tokens(packed)
    assert real == sum(LENGTHS) and processed == rows * width
    assert_examples_laid_out(packed)
    padded = collate(encoded, indices, 0)["inputs"][0]
    unpacked = unpack_inputs(packed, 0)
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        assert torch.equal(unpacked[key], padded[key]), key


def test_wider_rows_share_more_and_are_cut_to_the_fullest_row():
    encoded = random_set("sst", "cross", pad_id=0)
    indices = list(range(len(LENGTHS)))  # 60 tokens, longest 12
    narrow = collate_packed(encoded, indices, 0)["inputs"][0]
    wide = collate_packed(encoded, indices, 0, row_width=31)["inputs"][0]
    assert narrow["input_ids"].shape == (5, 12)
    assert wide["input_ids"].shape == (2, 31)  # first-fit decreasing: [12, 12, 7] and [9, 6, 5, 4, 3, 2]
    assert packed_tokens(wide) == (60, 62)
    over = collate_packed(encoded, indices, 0, row_width=200)["inputs"][0]
    assert over["input_ids"].shape == (1, 60)  # one row, no wider than its examples
    for packed in (wide, over):
        assert_examples_laid_out(packed)
        unpacked = unpack_inputs(packed, 0)
        padded = collate(encoded, indices, 0)["inputs"][0]
        assert all(torch.equal(unpacked[k], padded[k]) for k in ("input_ids", "attention_mask", "token_type_ids"))


def test_a_row_too_narrow_is_refused():
    with pytest.raises(ValueError, match="does not fit"):
        pack_rows([5, 3], width=4)


@pytest.mark.parametrize("kind", ["bert-sdpa", "bert-eager", "mpnet"])
def test_probe_finds_the_position_offset_and_mask_form(kind):
    support = packing_support(tiny_encoder(kind))
    assert support is not None
    assert support.position_offset == (2 if kind == "mpnet" else 0)  # MPNet counts positions from padding_idx + 1
    assert support.boolean_mask == (kind == "bert-sdpa")


def _outputs_and_grads(model: MultiTaskModel, task: str, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    outputs = model(task, batch["inputs"])
    task_loss(model.specs[task], outputs, batch["labels"]).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return outputs.detach(), grads


@pytest.mark.parametrize("kind", ["bert-sdpa", "bert-eager", "mpnet"])
@pytest.mark.parametrize(("task", "architecture"), [("sst", "cross"), ("sts", "cross"), ("para", "bi-concat"),
                                                    ("sts", "bi-cosine")])
@pytest.mark.parametrize("pooling", ["cls", "mean"])
@pytest.mark.parametrize("row_width", [0, 24])  # rows as wide as the longest (12), or up to 24 tokens
def test_packed_forward_and_backward_equal_padded(kind, task, architecture, pooling, row_width):
    encoder = tiny_encoder(kind)
    pad_id = encoder.config.pad_token_id or 0
    spec = BUILTIN_TASKS[task]
    model = MultiTaskModel(encoder, [spec], architecture, pooling, dropout=0.0).train()
    encoded = random_set(task, architecture, pad_id)
    indices = [4, 0, 8, 3, 1, 6, 2]
    out_padded, grads_padded = _outputs_and_grads(model, task, collate(encoded, indices, pad_id))
    packed = collate_packed(encoded, indices, pad_id, row_width)
    assert len(packed["inputs"]) == (2 if architecture != "cross" else 1)
    assert packed["inputs"][0]["input_ids"].shape[0] < len(indices)  # really packed, and run packed
    assert packed["inputs"][0]["input_ids"].shape[1] == (12 if row_width == 0 else 24)
    assert packing_support(encoder) is not None
    out_packed, grads_packed = _outputs_and_grads(model, task, packed)
    torch.testing.assert_close(out_packed, out_padded, atol=1e-5, rtol=1e-4)
    assert grads_packed.keys() == grads_padded.keys()
    for name, grad in grads_padded.items():
        torch.testing.assert_close(grads_packed[name], grad, atol=1e-5, rtol=1e-4, msg=name)


def test_inputs_embeds_in_place_of_ids_as_smart_passes_them():
    encoder = tiny_encoder("bert-sdpa")
    model = MultiTaskModel(encoder, [BUILTIN_TASKS["sst"]], dropout=0.0).eval()
    encoded = random_set("sst", "cross", 0)
    words = encoder.get_input_embeddings()
    with torch.no_grad():
        outputs = []
        for batch in (collate(encoded, [0, 1, 2, 5], 0), collate_packed(encoded, [0, 1, 2, 5], 0)):
            inputs = [{**{k: v for k, v in x.items() if k != "input_ids"}, "inputs_embeds": words(x["input_ids"])}
                      for x in batch["inputs"]]
            outputs.append(model("sst", inputs))
    torch.testing.assert_close(outputs[1], outputs[0], atol=1e-5, rtol=1e-4)


class NoPositionIds(torch.nn.Module):
    """An encoder whose forward takes no position ids."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.config = inner.config

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, inputs_embeds=None):
        return self.inner(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                          inputs_embeds=inputs_embeds)


class IgnoresFourDMasks(NoPositionIds):
    """An encoder that takes position ids but drops a 4-D mask (attends to the whole row)."""

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None):
        if attention_mask is not None and attention_mask.dim() == 4:
            attention_mask = None
        return self.inner(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                          position_ids=position_ids, inputs_embeds=inputs_embeds)


@pytest.mark.parametrize("wrapper", [NoPositionIds, IgnoresFourDMasks])
def test_an_encoder_that_cannot_pack_falls_back_to_the_padded_batch(wrapper):
    encoder = wrapper(tiny_encoder("bert-eager"))
    assert packing_support(encoder) is None
    model = MultiTaskModel(encoder, [BUILTIN_TASKS["sst"]], dropout=0.0).train()
    encoded = random_set("sst", "cross", 0)
    out_padded, grads_padded = _outputs_and_grads(model, "sst", collate(encoded, [0, 1, 2, 3], 0))
    out_packed, grads_packed = _outputs_and_grads(model, "sst", collate_packed(encoded, [0, 1, 2, 3], 0))
    torch.testing.assert_close(out_packed, out_padded, atol=1e-6, rtol=1e-5)
    for name, grad in grads_padded.items():
        torch.testing.assert_close(grads_packed[name], grad, atol=1e-6, rtol=1e-5)
