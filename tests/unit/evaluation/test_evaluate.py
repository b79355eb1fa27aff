"""predict_set: packed batches give today's padded outputs; int8 quantization stays close and leaves the model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mtbert.data import encode_examples, read_task_file
from mtbert.errors import MtbertError
from mtbert.evaluation.evaluate import predict_set, quantized
from mtbert.model import MultiTaskModel, load_encoder
from mtbert.model.packing import packing_support
from mtbert.tasks import BUILTIN_TASKS

INT8_LINEAR = torch.ao.nn.quantized.dynamic.Linear


@pytest.fixture(scope="module")
def model_and_sets(tiny_model_dir, tiny_data_dir):
    encoder, tokenizer = load_encoder(str(tiny_model_dir), 0.1)
    specs = [BUILTIN_TASKS[t] for t in ("sst", "para", "sts")]
    torch.manual_seed(0)
    model = MultiTaskModel(encoder, specs)
    sets = {s.name: encode_examples(tokenizer, s, read_task_file(tiny_data_dir / s.dev_file, s).examples, 32, "cross")
            for s in specs}
    return model, sets


@pytest.mark.parametrize("task", ["sst", "para", "sts"])
def test_packed_prediction_equals_padded(model_and_sets, task):
    model, sets = model_and_sets
    padded = predict_set(model, sets[task], 8, 0, packed=False)
    packed = predict_set(model, sets[task], 8, 0, packed=True)
    if BUILTIN_TASKS[task].is_regression:  # values, to float tolerance
        np.testing.assert_allclose(packed[0], padded[0], atol=1e-5, rtol=0)
    else:  # the same classes
        np.testing.assert_array_equal(packed[0], padded[0])
    np.testing.assert_allclose(packed[1], padded[1], atol=1e-5, rtol=0)


def test_int8_prediction_is_close_and_leaves_the_model_as_it_was(model_and_sets):
    model, sets = model_and_sets
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _, scores = predict_set(model, sets["sts"], 8, 0)
    _, scores_int8 = predict_set(model, sets["sts"], 8, 0, quantize="int8")
    assert not np.array_equal(scores_int8, scores)  # really quantized
    np.testing.assert_allclose(scores_int8, scores, atol=0.2)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(isinstance(m, INT8_LINEAR) for m in model.modules())
    with pytest.raises(MtbertError, match="--quantize: unknown quantization 'int4'"):
        quantized(model, "int4")


def test_the_int8_copy_runs_packed_batches_as_probed_in_fp32(tiny_model_dir, monkeypatch):
    from mtbert.model import packing

    probed = []
    real_probe = packing._probe
    monkeypatch.setattr(packing, "_probe", lambda encoder, kind: probed.append(encoder) or real_probe(encoder, kind))
    model = MultiTaskModel(load_encoder(str(tiny_model_dir), 0.1)[0], [BUILTIN_TASKS["sts"]])
    copy = quantized(model, "int8")
    assert any(isinstance(m, INT8_LINEAR) for m in copy.modules())
    assert packing_support(copy.encoder) == packing_support(model.encoder) is not None
    assert probed == [model.encoder]  # once, in fp32: int8 activations take each batch's range
