"""`mtbert export`: each export is loaded by sentence-transformers itself and reproduces `mtbert predict`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard

from mtbert.cli import main
from mtbert.config import build_config, save_config
from mtbert.data import read_task_file
from mtbert.errors import MtbertError
from mtbert.evaluation.export import export_task
from mtbert.evaluation.finished import predict_run
from mtbert.io import atomic_write_json
from mtbert.model import MultiTaskModel, load_encoder

pytest.importorskip("sentence_transformers")


def make_run(root: Path, model_dir: Path, data_dir: Path, architecture: str = "cross", pooling: str = "cls",
             tasks: tuple = ("sst", "para", "sts"), scale_shift: tuple[float, float] | None = None) -> Path:
    """A finished-looking run folder: config.yaml, results.json and best/ with random (not trivial) heads."""
    cfg = build_config({"output_dir": str(root), "model_name_or_path": str(model_dir), "data_dir": str(data_dir),
                        "tasks": list(tasks), "pair_architecture": architecture, "pooling": pooling,
                        "max_length": 16, "per_device_eval_batch_size": 8})
    root.mkdir(parents=True)
    save_config(cfg, root / "config.yaml")
    encoder, tokenizer = load_encoder(str(model_dir), 0.1)
    model = MultiTaskModel(encoder, cfg.task_specs(), architecture, pooling, dropout=0.1)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in model.heads.named_parameters():
            if name.endswith(("scale", "shift")):
                continue
            if name.endswith("bias"):
                param.zero_()
            else:  # large weights, so that the tiny random encoder's small differences between inputs show
                param.copy_(torch.randn(param.shape, generator=generator) * 4 / param.shape[1] ** 0.5)
        for head in model.heads.values():
            if scale_shift is not None and hasattr(head, "scale"):
                head.scale.fill_(scale_shift[0])
                head.shift.fill_(scale_shift[1])
    model.save_pretrained(root / "best", tokenizer)
    atomic_write_json(root / "results.json", {"sst_acc": 0.4, "para_acc": 0.7, "sts_corr": 0.5, "overall": 0.617,
                                              "overall_ci95": [0.6, 0.63]})
    return root


def mtbert_predictions(run: Path, task: str, data_dir: Path, tmp_path: Path) -> np.ndarray:
    """What `mtbert predict --format csv` writes for the task's dev file."""
    from mtbert.evaluation.finished import load_run_config

    out = tmp_path / f"{task}-pred.csv"
    spec = {s.name: s for s in load_run_config(run).task_specs()}[task]
    predict_run(run, task, str(data_dir / spec.dev_file), str(out), "csv")
    return np.array([float(line.split(",")[1]) for line in out.read_text().splitlines()[1:]])


def dev_texts(run: Path, task: str, data_dir: Path) -> list[tuple[str, ...]]:
    from mtbert.evaluation.finished import load_run_config

    spec = {s.name: s for s in load_run_config(run).task_specs()}[task]
    return [e.texts for e in read_task_file(data_dir / spec.dev_file, spec, labeled=False).examples]


def mtbert_scores(run: Path, task: str, data_dir: Path) -> np.ndarray:
    """The probabilities (or values, logits) mtbert's own model gives the dev examples, one at a time."""
    from mtbert.data import collate, encode_examples
    from mtbert.evaluation.finished import load_run_config
    from mtbert.model import load_tokenizer
    from mtbert.model.multitask import decide

    cfg = load_run_config(run)
    spec = {s.name: s for s in cfg.task_specs()}[task]
    examples = read_task_file(data_dir / spec.dev_file, spec, labeled=False).examples
    model = MultiTaskModel.from_pretrained(run / "best").eval()
    tokenizer = load_tokenizer(run / "best")
    encoded = encode_examples(tokenizer, spec, examples, cfg.max_length, model.pair_architecture)
    batch = collate(encoded, list(range(len(examples))), tokenizer.pad_token_id)
    with torch.inference_mode():
        return decide(spec, model(task, batch["inputs"]))[1].numpy()


# a random encoder's first token hardly varies between inputs, so `cls` pooling is checked on one task only
# (a wrong pooling would still be far off) and the others check that the outputs vary
@pytest.mark.parametrize(("task", "pooling"), [("sst", "mean"), ("para", "cls"), ("sts", "mean")])
def test_cross_and_single_exports_reproduce_predict(tiny_model_dir, tiny_data_dir, tmp_path, task, pooling):
    from sentence_transformers import CrossEncoder, SentenceTransformer

    run = make_run(tmp_path / "run", tiny_model_dir, tiny_data_dir, pooling=pooling)
    out, plan = export_task(run, task, tmp_path / "export")
    expected = mtbert_predictions(run, task, tiny_data_dir, tmp_path)
    scores = mtbert_scores(run, task, tiny_data_dir)
    texts = dev_texts(run, task, tiny_data_dir)
    if task == "sst":
        assert plan.library_class == "SentenceTransformer"
        logits = SentenceTransformer(str(out), device="cpu").encode([t[0] for t in texts])
        assert logits.shape == (len(texts), 5)
        np.testing.assert_array_equal(logits.argmax(axis=1), expected)
        probabilities = torch.softmax(torch.from_numpy(logits), dim=-1).numpy()
        np.testing.assert_allclose(probabilities, scores, atol=1e-4)
        assert np.ptp(scores[:, 0]) > 1e-3  # the heads are not trivial: the comparison can fail
    else:
        assert plan.library_class == "CrossEncoder"
        got = CrossEncoder(str(out), device="cpu").predict(texts)
        if task == "para":
            np.testing.assert_array_equal((got > 0.5).astype(float), expected)
            np.testing.assert_allclose(got, scores[:, 0], atol=1e-4)
        else:
            np.testing.assert_allclose(got, expected, atol=1e-4)
            assert np.ptp(expected) > 1e-3
    card = ModelCard.load(out / "README.md")
    assert card.data.library_name == "sentence-transformers"
    assert [(r.task_name, r.metric_value) for r in card.data.eval_results] == [(task, {"sst": 0.4, "para": 0.7,
                                                                                       "sts": 0.5}[task])]
    assert f'{plan.library_class}("{out.as_posix()}")' in card.text and "| overall |" not in card.text
    modules = json.loads((out / "modules.json").read_text())
    assert all(m["type"].startswith("sentence_transformers.") for m in modules)


def test_a_pair_task_of_three_classes_is_a_cross_encoder_of_three_logits(tiny_model_dir, tiny_data_dir, tmp_path):
    from sentence_transformers import CrossEncoder

    nli = {"name": "nli", "kind": "pair-classification", "train_file": "quora-train.csv", "dev_file": "quora-dev.csv",
           "text_columns": ["sentence1", "sentence2"], "label_column": "is_duplicate", "num_labels": 3,
           "head_hidden_sizes": [16, 8]}
    run = make_run(tmp_path / "run", tiny_model_dir, tiny_data_dir, pooling="mean", tasks=(nli,))
    out, _ = export_task(run, "nli", tmp_path / "export")
    model = CrossEncoder(str(out), device="cpu")
    assert model.num_labels == 3
    got = model.predict(dev_texts(run, "nli", tiny_data_dir), apply_softmax=True)
    np.testing.assert_array_equal(got.argmax(axis=1), mtbert_predictions(run, "nli", tiny_data_dir, tmp_path))
    np.testing.assert_allclose(got, mtbert_scores(run, "nli", tiny_data_dir), atol=1e-4)


def test_bi_cosine_export_is_a_sentence_transformer_whose_similarity_is_the_score(tiny_model_dir, tiny_data_dir,
                                                                                  tmp_path):
    from sentence_transformers import SentenceTransformer

    run = make_run(tmp_path / "run", tiny_model_dir, tiny_data_dir, architecture="bi-cosine", pooling="mean",
                   tasks=("sts",), scale_shift=(2.2, 2.6))
    out, plan = export_task(run, "sts", tmp_path / "export")
    assert plan.library_class == "SentenceTransformer"
    model = SentenceTransformer(str(out), device="cpu")
    texts = dev_texts(run, "sts", tiny_data_dir)
    got = model.similarity_pairwise(model.encode([t[0] for t in texts]), model.encode([t[1] for t in texts]))
    expected = mtbert_predictions(run, "sts", tiny_data_dir, tmp_path)
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-4)
    assert np.ptp(expected) > 1e-3


def test_export_needs_no_mtbert_code(tiny_model_dir, tiny_data_dir, tmp_path):
    """Every module sentence-transformers loads comes from sentence-transformers, transformers or torch.

    (Run once by hand in a process where `import mtbert` fails: the same export loads and predicts the same
    values; it is not a test here because a fresh interpreter importing sentence-transformers takes ~30 s.)
    """
    from sentence_transformers import CrossEncoder

    run = make_run(tmp_path / "run", tiny_model_dir, tiny_data_dir, tasks=("sts",))
    out, _ = export_task(run, "sts", tmp_path / "export")
    model = CrossEncoder(str(out), device="cpu", trust_remote_code=False)
    origins = {type(m).__module__.split(".")[0] for m in model.modules()}
    assert origins <= {"sentence_transformers", "transformers", "torch"}, origins
    assert "mtbert" not in (out / "modules.json").read_text() + (out / "config_sentence_transformers.json").read_text()


def test_what_cannot_be_exported_is_one_sentence(tiny_model_dir, tiny_data_dir, tmp_path, capsys):
    concat = make_run(tmp_path / "concat", tiny_model_dir, tiny_data_dir, architecture="bi-concat", tasks=("sts",))
    capsys.readouterr()
    assert main(["export", str(concat), "--task", "sts", "--output", str(tmp_path / "e1")]) == 2
    err = capsys.readouterr().err
    assert "bi-concat head" in err and "cannot be exported" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "e1").exists()

    negative = make_run(tmp_path / "neg", tiny_model_dir, tiny_data_dir, architecture="bi-cosine", tasks=("para",),
                        scale_shift=(3.0, -0.5))
    with pytest.raises(MtbertError, match=r"3 \* cos \+ -0.5 cannot be exported"):
        export_task(negative, "para", tmp_path / "e2")
    assert not (tmp_path / "e2").exists()


def test_bad_arguments_are_refused_before_writing(tiny_model_dir, tiny_data_dir, tmp_path, capsys):
    run = make_run(tmp_path / "run", tiny_model_dir, tiny_data_dir, tasks=("sst",))
    capsys.readouterr()
    assert main(["export", str(run), "--task", "nope", "--output", str(tmp_path / "out")]) == 2
    assert "no trained task nope" in capsys.readouterr().err
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("x")
    assert main(["export", str(run), "--task", "sst", "--output", str(busy)]) == 2
    assert "is not empty" in capsys.readouterr().err
    assert sorted(p.name for p in busy.iterdir()) == ["keep.txt"]
    assert main(["export", str(tmp_path / "missing"), "--task", "sst", "--output", str(tmp_path / "o")]) == 2
    assert "not a run folder" in capsys.readouterr().err
    assert main(["export", str(run), "--task", "sst", "--output", str(run / "best" / "st")]) == 2
    assert "inside the run's model folder" in capsys.readouterr().err


def test_a_lora_encoder_is_merged_into_a_plain_transformers_model(tiny_model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import PreTrainedModel

    from mtbert.evaluation.export import plain_encoder

    encoder, tokenizer = load_encoder(str(tiny_model_dir), 0.0)
    inputs = tokenizer(["a good film", "the plot was dull"], padding=True, return_tensors="pt")
    with torch.no_grad():
        plain = encoder.eval()(**inputs).last_hidden_state.clone()
    peft_model = get_peft_model(encoder, LoraConfig(r=4, target_modules=["query", "value"])).eval()
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)  # adapters that change the outputs
    with torch.no_grad():
        before = peft_model(**inputs).last_hidden_state
        merged = plain_encoder(peft_model)
        after = merged(**inputs).last_hidden_state
    assert isinstance(merged, PreTrainedModel) and not hasattr(merged, "peft_config")
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5)
    assert (before - plain).abs().max() > 1e-2  # the adapters mattered
    assert plain_encoder(merged) is merged
