"""`mtbert export --push_to_hub` against a fake Hub on 127.0.0.1 that records what huggingface_hub sends
(tests/helpers/fake_hub.py's UploadHub).

huggingface_hub reads HF_ENDPOINT and HF_HUB_OFFLINE when it is imported, so the success and refusal runs are the
real CLI in a subprocess with its own environment; the other cases run in this process (the errors raised before
any network call, and two with huggingface_hub's constants patched).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.fake_hub import UploadHub as FakeHub
from helpers.fake_hub import read_commit, uploading

import mtbert.evaluation.evaluate
import mtbert.evaluation.metrics
from mtbert.cli import main
from mtbert.config import build_config
from mtbert.errors import MtbertError
from mtbert.training.run import train

pytest.importorskip("sentence_transformers")
pytestmark = pytest.mark.e2e

REPO = "alice/tiny-sst"


def committed(hub: FakeHub) -> tuple[dict, dict[str, bytes]]:
    """The one commit's header and its files (path -> bytes)."""
    [(_, headers, body)] = hub.posted("commit")
    assert headers["content-type"] == "application/x-ndjson"
    return read_commit(body)


def folder_files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture()
def hub() -> Iterator[FakeHub]:
    with uploading() as server:
        yield server


@pytest.fixture(scope="module")
def run_dir(tiny_model_dir, tiny_data_dir, tmp_path_factory) -> Path:
    """A tiny trained run of task sst (a few seconds)."""
    root = tmp_path_factory.mktemp("push") / "run"
    cfg = build_config({"output_dir": str(root), "model_name_or_path": str(tiny_model_dir),
                        "data_dir": str(tiny_data_dir), "tasks": ["sst"], "method": "sum",
                        "per_device_train_batch_size": 4, "per_device_eval_batch_size": 16,
                        "samples_per_task_per_epoch": 8, "num_train_epochs": 1, "learning_rate": 1e-3,
                        "max_length": 32, "seed": 0})
    with pytest.MonkeyPatch.context() as patch:  # the overall score's bootstrap is not checked here
        stub = lambda results, resamples=1000, seed=0: (0.0, 1.0)  # noqa: E731
        patch.setattr(mtbert.evaluation.evaluate, "bootstrap_overall", stub)
        patch.setattr(mtbert.evaluation.metrics, "bootstrap_overall", stub)
        train(cfg)
    return root


def export_cli(run: Path, out: Path, hub: FakeHub, *flags: str) -> subprocess.CompletedProcess:
    """`mtbert export RUN --task sst --output OUT --push_to_hub REPO FLAGS` in its own process, on the fake Hub
    (with a Hugging Face home of its own: hf_xet writes its logs there)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "0", "HF_ENDPOINT": hub.url, "HF_TOKEN": "hf_test",
           "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HOME": str(out.parent / "hf_home"), "NO_PROXY": "127.0.0.1",
           "no_proxy": "127.0.0.1"}
    return subprocess.run([sys.executable, "-m", "mtbert", "export", str(run), "--task", "sst", "--output", str(out),
                           "--push_to_hub", REPO, *flags], capture_output=True, text=True, env=env, timeout=600)


def only_error_line(code: int, err: str) -> str:
    """Exit code 2, no traceback, and the last non-empty line of stderr is its only `error: ` line."""
    assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], err
    return errors[0]


def test_push_creates_the_repo_and_commits_the_exported_folder(run_dir, hub, tmp_path):
    out = tmp_path / "export"
    done = export_cli(run_dir, out, hub)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "HTTP Request" not in done.stderr

    [(_, headers, body)] = hub.posted("repos/create")
    assert json.loads(body) == {"name": "tiny-sst", "organization": "alice", "type": "model"}  # no --private
    assert headers["authorization"] == "Bearer hf_test"
    assert not hub.posted("branch")
    [(path, _, _)] = hub.posted("commit")
    assert path.split("?")[0] == f"/api/models/{REPO}/commit/main"
    header, files = committed(hub)
    assert header["summary"] == "mtbert export of task sst from run run"
    exported = folder_files(out)
    assert {"README.md", "modules.json", "model.safetensors", "mtbert_export.json"} <= exported.keys()
    assert files == exported  # every file, byte for byte
    for name, data in files.items():  # nothing pushed names a folder of this machine
        assert str(run_dir.parent) not in data.decode(errors="replace"), name
    card = files["README.md"].decode()
    assert "library_name: sentence-transformers" in card
    assert f'SentenceTransformer("{REPO}")' in card and str(out) not in card  # the pushed card loads the repo
    assert done.stdout.splitlines()[-1] == f"pushed {out} to {hub.url}/{REPO}: {hub.url}/{REPO}/commit/{1:040x}"


def test_a_refused_push_is_one_error_line_and_keeps_the_folder(run_dir, hub, tmp_path):
    hub.refuse = 401
    out = tmp_path / "export"
    done = export_cli(run_dir, out, hub)
    line = only_error_line(done.returncode, done.stderr)
    assert done.stderr.strip() == line  # nothing else on stderr: no HTTP request lines either
    assert line == (f"error: --push_to_hub: the Hub at {hub.url} refused to create the repo {REPO} "
                    "(401 Unauthorized: Invalid username or password); log in with `hf auth login` or set HF_TOKEN "
                    f"(a token with write access); the export {out} was written and can be uploaded later with "
                    f"`hf upload {REPO} {out}`")
    assert {"README.md", "modules.json", "model.safetensors"} <= folder_files(out).keys()
    assert not hub.posted("commit")


def test_private_repo_on_a_branch_with_a_commit_message(run_dir, hub, tmp_path, monkeypatch, capsys):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", hub.url)
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    monkeypatch.setenv("HF_XET_CACHE", str(tmp_path / "xet"))  # hf_xet's logs, not in the user's cache
    out = tmp_path / "export"
    assert main(["export", str(run_dir), "--task", "sst", "--output", str(out), "--push_to_hub", REPO, "--private",
                 "--revision", "dev", "--commit_message", "tiny sst, first try"]) == 0
    [(_, _, body)] = hub.posted("repos/create")
    assert json.loads(body) == {"name": "tiny-sst", "organization": "alice", "type": "model", "visibility": "private"}
    [(path, _, _)] = hub.posted("branch")
    assert path == f"/api/models/{REPO}/branch/dev"
    [(path, _, _)] = hub.posted("commit")
    assert path.split("?")[0] == f"/api/models/{REPO}/commit/dev"
    header, files = committed(hub)
    assert header["summary"] == "tiny sst, first try"
    assert files == folder_files(out)
    assert capsys.readouterr().out.splitlines()[-1].startswith(f"pushed {out} to {hub.url}/{REPO}: ")


@pytest.mark.parametrize("repo_id", ["alice/bad--name", "tiny-sst", "a/b/c", "alice/name.git", "alice/ spaced"])
def test_an_invalid_repo_id_is_refused_before_writing(run_dir, tmp_path, capsys, repo_id):
    out = tmp_path / "export"
    code = main(["export", str(run_dir), "--task", "sst", "--output", str(out), "--push_to_hub", repo_id])
    line = only_error_line(code, capsys.readouterr().err)
    assert line.startswith(f"error: --push_to_hub: {repo_id!r} is not a Hub repo id; give owner/name")
    assert not out.exists()


def test_offline_mode_is_refused_before_writing(run_dir, tmp_path, capsys, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # what HF_HUB_OFFLINE=1 sets at import
    out = tmp_path / "export"
    code = main(["export", str(run_dir), "--task", "sst", "--output", str(out), "--push_to_hub", REPO])
    line = only_error_line(code, capsys.readouterr().err)
    assert line == ("error: --push_to_hub: the push needs the Hub, but offline mode is set (HF_HUB_OFFLINE=1); "
                    "unset it to push, or export without --push_to_hub")
    assert not out.exists()


def test_push_options_need_push_to_hub(run_dir, tmp_path, capsys):
    out = tmp_path / "export"
    code = main(["export", str(run_dir), "--task", "sst", "--output", str(out), "--private"])
    assert only_error_line(code, capsys.readouterr().err) == "error: --private: only with --push_to_hub REPO_ID"
    assert not out.exists()


def test_an_unreachable_hub_names_the_step_and_keeps_the_folder(tmp_path, monkeypatch):
    from huggingface_hub import constants

    from mtbert.evaluation.hub import push_folder

    monkeypatch.setenv("HF_TOKEN", "hf_test")
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "README.md").write_text("# card\n")
    # a port bound but not listening (held for the whole call, so no other test can take it): connection refused
    with socket.socket() as closed, pytest.raises(MtbertError) as raised:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{port}")
        push_folder(folder, REPO, commit_message="x")
    message = str(raised.value)
    assert message.startswith(f"--push_to_hub: could not reach the Hub at http://127.0.0.1:{port} to create the "
                              f"repo {REPO} (ConnectError: ")
    assert message.endswith(f"; the export {folder} was written and can be uploaded later with "
                            f"`hf upload {REPO} {folder}`")
    assert "\n" not in message and (folder / "README.md").is_file()
