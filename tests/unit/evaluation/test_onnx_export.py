"""`mtbert export --format onnx`: one graph with every task's head, run by ONNX Runtime, equals `mtbert predict`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mtbert.cli import main
from mtbert.data import collate, encode_examples, read_task_file
from mtbert.evaluation.finished import (
    evaluate_run,
    load_model,
    load_run_config,
    model_dirs,
    predict_run,
    trained_tasks,
    usable_length,
)
from mtbert.evaluation.onnx_export import export_onnx
from mtbert.model import onnx_runtime
from mtbert.model.inference import predict_set
from mtbert.model.onnx_runtime import ONNX_CONFIG, OnnxModel

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from helpers.onnx_runs import STARS, make_run  # noqa: E402


def torch_and_onnx(run: Path, export: OnnxModel, task: str, data_dir: Path):
    """(predictions, scores) of `mtbert predict`'s path (packed batches, the run's model) and of the export's."""
    cfg = load_run_config(run)
    spec = {s.name: s for s in trained_tasks(run, cfg)}[task]
    examples = read_task_file(data_dir / spec.dev_file, spec, labeled=False).examples
    model, tokenizer = load_model(model_dirs(run, cfg)[task], torch.device("cpu"))
    encoded = encode_examples(tokenizer, spec, examples, usable_length(cfg, model), model.pair_architecture)
    expected = predict_set(model, encoded, cfg.per_device_eval_batch_size, tokenizer.pad_token_id)
    encoded = encode_examples(export.tokenizer, export.specs[task], examples, export.max_length,
                              export.pair_architecture)
    got = predict_set(export, encoded, export.batch_size, export.tokenizer.pad_token_id, packed=False)
    return expected, got, (model, encoded)


# (architecture, pooling): cross and both bi-encoder heads, cls and mean pooling. Each run has the four kinds.
CASES = [("cross", "mean"), ("bi-cosine", "mean"), ("bi-concat", "cls")]


@pytest.mark.parametrize(("architecture", "pooling"), CASES)
def test_the_export_equals_mtbert_predict_for_every_kind(tiny_model_dir, tiny_data_dir, tmp_path, architecture,
                                                         pooling):
    run = make_run(tmp_path / "run", tiny_model_dir, tiny_data_dir, architecture, pooling)
    out, settings = export_onnx(run, tmp_path / "export")
    assert sorted(p.name for p in out.iterdir() if p.suffix in (".onnx", ".json")) == [
        "model.onnx", ONNX_CONFIG, "tokenizer.json", "tokenizer_config.json"]
    export = OnnxModel(out)
    assert [t["name"] for t in settings["tasks"]] == ["sst", "para", "sts", "stars"]
    assert {t["name"]: t["kind"] for t in settings["tasks"]} == {
        "sst": "single", "para": "pair-classification", "sts": "pair-regression", "stars": "single-regression"}
    bi = architecture != "cross"
    assert {t["name"]: t["encoder_inputs"] for t in settings["tasks"]} == {"sst": 1, "para": 1 + bi, "sts": 1 + bi,
                                                                           "stars": 1}
    assert settings["max_length"] == 16 and settings["pooling"] == pooling and settings["quantization"] is None
    shapes = {t["name"]: t["output_shape"] for t in settings["tasks"]}
    assert shapes["sst"] == ["batch", 5] and len(shapes["sts"]) == 1 and isinstance(shapes["sts"][0], str)
    for task in ("sst", "para", "sts", "stars"):
        (pred, scores), (got_pred, got_scores), (model, encoded) = torch_and_onnx(run, export, task, tiny_data_dir)
        assert export.specs[task] == model.specs[task]  # the json rebuilds the TaskSpec
        np.testing.assert_allclose(got_scores, scores, atol=1e-4, rtol=0)
        np.testing.assert_allclose(got_pred, pred, atol=1e-4, rtol=0)
        # a random encoder's first token hardly varies between inputs: with cls pooling the probabilities hardly
        # vary (a wrong pooling would still be far off), the raw outputs below do
        assert pooling == "cls" or np.ptp(scores[:, 0]) > 1e-3, task  # the heads are not trivial
        # the raw outputs of one padded batch, as MultiTaskModel.forward gives them
        batch = collate(encoded, list(range(5)), export.tokenizer.pad_token_id)
        with torch.inference_mode():
            raw = model.eval()(task, batch["inputs"])
        torch.testing.assert_close(export(task, batch["inputs"]), raw, atol=1e-4, rtol=0)
        assert float(raw.max() - raw.min()) > 1e-2, task


def test_predict_and_evaluate_take_the_export_folder(tiny_model_dir, tiny_data_dir, tmp_path, capsys):
    run = make_run(tmp_path / "run", tiny_model_dir, tiny_data_dir, "bi-cosine", "mean")
    out, _ = export_onnx(run, tmp_path / "export")
    for task, file in (("sst", "ids-sst-dev.csv"), ("sts", "sts-dev.csv"), ("stars", "ids-sst-dev.csv")):
        predict_run(run, task, str(tiny_data_dir / file), str(tmp_path / f"{task}-run.csv"), "csv")
        predict_run(out, task, str(tiny_data_dir / file), str(tmp_path / f"{task}-onnx.csv"), "csv")
        want = [line.split(",") for line in (tmp_path / f"{task}-run.csv").read_text().splitlines()]
        got = [line.split(",") for line in (tmp_path / f"{task}-onnx.csv").read_text().splitlines()]
        assert [row[0] for row in got] == [row[0] for row in want]  # ids and header, in the file's order
        np.testing.assert_allclose([float(r[1]) for r in got[1:]], [float(r[1]) for r in want[1:]], atol=1e-4)
    expected, got = evaluate_run(run), evaluate_run(out)
    assert got.keys() == expected.keys()
    for key in ("sst_acc", "para_acc", "sts_corr", "stars_corr", "overall"):
        assert got[key] == pytest.approx(expected[key], abs=1e-4), key


def test_a_two_step_run_exports_each_tasks_own_checkpoint(tiny_model_dir, tiny_data_dir, tmp_path, monkeypatch):
    run = make_run(tmp_path / "run", tiny_model_dir, tiny_data_dir, "cross", "mean", tasks=("sst", "sts", STARS),
                   two_step=True)
    out, settings = export_onnx(run, tmp_path / "export")
    assert settings["checkpoints"] == {"sst": "best", "sts": "tasks/sts/best", "stars": "tasks/stars/best"}
    export = OnnxModel(out)
    for task in ("sst", "sts", "stars"):
        (pred, scores), (got_pred, got_scores), _ = torch_and_onnx(run, export, task, tiny_data_dir)
        np.testing.assert_allclose(got_scores, scores, atol=1e-4, rtol=0)
    # a task runs on the graph cut to its output: one of the three encoders, not all (ONNX Runtime runs every node)
    made = []
    monkeypatch.setattr(onnx_runtime, "_session", lambda path, threads, graph=None: made.append(graph))
    OnnxModel(out).session("sts")
    assert kernels_run(str(out / "model.onnx"), tmp_path) > 2 * kernels_run(made[0], tmp_path)


def kernels_run(model: str | bytes, tmp_path: Path) -> int:
    """How many node kernels one ONNX Runtime run of `model` (a path, or a serialized graph) executes."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.enable_profiling = True
    options.profile_file_prefix = str(tmp_path / "profile")
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    ids = np.array([[101, 2000, 102]], dtype=np.int64)
    session.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)})
    events = json.loads(Path(session.end_profiling()).read_text())
    return sum(1 for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"))


def test_int8_agrees_loosely_and_is_smaller(tiny_model_dir, tiny_data_dir, tmp_path):
    run = make_run(tmp_path / "run", tiny_model_dir, tiny_data_dir, "cross", "mean", tasks=("sst", "sts"))
    fp32, _ = export_onnx(run, tmp_path / "fp32")
    int8, settings = export_onnx(run, tmp_path / "int8", quantize="int8")
    assert settings["quantization"] == "int8"
    assert (int8 / "model.onnx").stat().st_size < (fp32 / "model.onnx").stat().st_size / 2
    import onnx

    ops = {node.op_type for node in onnx.load(str(int8 / "model.onnx")).graph.node}
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= ops
    for task in ("sst", "sts"):
        (_, scores), (_, got), _ = torch_and_onnx(run, OnnxModel(int8), task, tiny_data_dir)
        assert np.abs(got - scores).max() < 0.1 * max(np.ptp(scores), 1e-3) + 0.05, task
        assert np.corrcoef(got[:, 0], scores[:, 0])[0, 1] > 0.9, task


def test_model_predict_on_the_export(tiny_model_dir, tiny_data_dir, tmp_path):
    run = make_run(tmp_path / "run", tiny_model_dir, tiny_data_dir, "bi-cosine", "mean", tasks=("sst", "sts"))
    out, _ = export_onnx(run, tmp_path / "export")
    from mtbert.model import MultiTaskModel

    model = MultiTaskModel.from_pretrained(run / "best")
    pairs = [("a good movie", "a great film"), ("the dog", "what can you do"), ("x", "y z")]
    want, got = model.predict("sts", pairs), OnnxModel(out).predict("sts", pairs)
    np.testing.assert_allclose(got.scores, want.scores, atol=1e-4)
    texts = ["a good movie", "dull", "the plot"]  # an odd number of rows (a bi-encoder head splits its rows in halves)
    want, got = model.predict("sst", texts), OnnxModel(out).predict("sst", texts)
    assert got.labels == want.labels


# ---- bad input: one sentence, exit 2, nothing written -------------------------------------------


@pytest.fixture(scope="module")
def exported(tiny_model_dir, tiny_data_dir, tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("onnx")
    run = make_run(root / "run", tiny_model_dir, tiny_data_dir, "cross", "cls", tasks=("sst", "sts"))
    return run, export_onnx(run, root / "export")[0]


def _copy(folder: Path, target: Path) -> Path:
    import shutil

    return Path(shutil.copytree(folder, target))


@pytest.mark.parametrize(("damage", "message"), [
    (lambda f: (f / ONNX_CONFIG).unlink(), "not an mtbert ONNX export (mtbert_onnx.json is missing"),
    (lambda f: (f / ONNX_CONFIG).write_text('{"format": "mtbert-onnx",\n  "tasks": ['),
     "mtbert_onnx.json, line 2: not valid JSON"),
    (lambda f: (f / ONNX_CONFIG).write_text(json.dumps({**json.loads((f / ONNX_CONFIG).read_text()),
                                                        "max_length": "long"})),
     "mtbert_onnx.json: key 'max_length' is missing or not an integer"),
    (lambda f: (f / ONNX_CONFIG).write_text((f / ONNX_CONFIG).read_text().replace('"pair-regression"', '"ner"')),
     "key 'tasks[1].spec.kind' is 'ner', a kind this mtbert does not know"),
    (lambda f: (f / "model.onnx").write_bytes(b"not a graph"), "not an ONNX graph"),
])
def test_a_damaged_export_is_one_sentence(exported, tmp_path, capsys, damage, message):
    folder = _copy(exported[1], tmp_path / "export")
    damage(folder)
    assert main(["predict", str(folder), "--task", "sst", "--input", "-"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert main(["evaluate", str(folder)]) == 2
    assert message in capsys.readouterr().err


def test_bad_export_and_predict_options(exported, tmp_path, capsys):
    run, folder = exported
    assert main(["predict", str(folder), "--task", "nope", "--input", "-"]) == 2
    assert "--task: the ONNX export" in capsys.readouterr().err and "has no task nope (tasks: sst, sts)"
    assert main(["predict", str(folder), "--task", "sst", "--input", "-", "--quantize", "int8"]) == 2
    assert "--quantize: " in capsys.readouterr().err
    assert main(["evaluate", str(folder), "--task_file", "nope", "x.csv"]) == 2
    assert "the run has no task nope" in capsys.readouterr().err
    for args, message in ((["--task", "sst", "--quantize", "int8"], "--quantize: only with --format onnx"),
                          ([], "--task: required for a sentence-transformers export"),
                          (["--format", "onnx", "--task", "sst"], "--task: not with --format onnx"),
                          (["--format", "onnx", "--push_to_hub", "a/b"], "--push_to_hub: not with --format onnx")):
        target = tmp_path / "out"
        assert main(["export", str(run), "--output", str(target), *args]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, args
        assert not target.exists()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    assert main(["export", str(run), "--format", "onnx", "--output", str(tmp_path / "full")]) == 2
    assert "is not empty" in capsys.readouterr().err


def test_stdin_prediction_of_the_export(exported, monkeypatch, capsys):
    import io

    run, folder = exported
    monkeypatch.setattr("sys.stdin", io.StringIO("a good movie\tgreat film\nthe dog\twhat can you do\n"))
    assert main(["predict", str(folder), "--task", "sts", "--input", "-"]) == 0
    lines = capsys.readouterr().out.splitlines()
    monkeypatch.setattr("sys.stdin", io.StringIO("a good movie\tgreat film\nthe dog\twhat can you do\n"))
    assert main(["predict", str(run), "--task", "sts", "--input", "-"]) == 0
    want = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[0] for line in lines] == ["1", "2"]
    np.testing.assert_allclose([float(x.split("\t")[1]) for x in lines], [float(x.split("\t")[1]) for x in want],
                               atol=1e-4)
