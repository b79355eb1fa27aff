"""`MultiTaskModel.from_pretrained("owner/name", revision=...)` against a fake Hub on 127.0.0.1: the download, a
revision, the cache in offline mode, and the one-sentence errors (no such repo, no such revision, offline and not
cached). huggingface_hub reads HF_ENDPOINT and HF_HUB_OFFLINE when imported, so each case runs in its own process."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.fake_hub import serving

from mtbert.errors import MtbertError
from mtbert.model import MultiTaskModel, load_encoder
from mtbert.tasks import BUILTIN_TASKS

pytestmark = pytest.mark.e2e
TEXTS = ["great fun love the film", "awful dull", "a very bad actor"]

SCRIPT = """
import json, sys
import mtbert
out = {}
for repo, revision in json.loads(sys.argv[1]):
    try:
        model = mtbert.MultiTaskModel.from_pretrained(repo, revision=revision)
    except mtbert.MtbertError as err:
        out[f"{repo}@{revision}"] = {"error": str(err)}
    else:
        found = model.predict("sst", TEXTS)
        out[f"{repo}@{revision}"] = {"tasks": list(model.specs), "scores": found.scores.tolist()}
print(json.dumps(out))
""".replace("TEXTS", repr(TEXTS))


@pytest.fixture(scope="module")
def checkpoints(tiny_model_dir, tmp_path_factory) -> dict[str, Path]:
    """Two saved models: `main` (sst, para) and `v1` (sst alone, other weights)."""
    root = tmp_path_factory.mktemp("hub-models")
    out = {}
    for name, tasks, seed in (("main", ("sst", "para"), 0), ("v1", ("sst",), 1)):
        encoder, tokenizer = load_encoder(str(tiny_model_dir), 0.1)
        torch.manual_seed(seed)
        MultiTaskModel(encoder, [BUILTIN_TASKS[t] for t in tasks]).save_pretrained(root / name, tokenizer)
        out[name] = root / name
    return out


def load_in_process(hub_url: str, home: Path, calls: list[tuple[str, str | None]], offline: bool = False) -> dict:
    env = {**os.environ, "HF_ENDPOINT": hub_url, "HF_HUB_OFFLINE": "1" if offline else "0", "HF_HOME": str(home),
           "HF_HUB_DISABLE_TELEMETRY": "1", "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
    env.pop("HF_TOKEN", None)
    done = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(calls)], capture_output=True, text=True,
                          env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def local_scores(folder: Path) -> np.ndarray:
    return MultiTaskModel.from_pretrained(folder).predict("sst", TEXTS).scores


def test_from_pretrained_by_hub_id_then_from_the_cache_offline(checkpoints, tmp_path):
    home = tmp_path / "hf_home"
    with serving() as hub:
        hub.add("alice/tiny", checkpoints["main"])
        hub.add("alice/tiny", checkpoints["v1"], revision="v1")
        got = load_in_process(hub.url, home, [["alice/tiny", None], ["alice/tiny", "v1"], ["bob/none", None],
                                              ["alice/tiny", "v9"]])
        fetched = len(hub.files_got())
        assert got["alice/tiny@None"]["tasks"] == ["sst", "para"]
        assert got["alice/tiny@v1"]["tasks"] == ["sst"]
        np.testing.assert_allclose(got["alice/tiny@None"]["scores"], local_scores(checkpoints["main"]), atol=1e-6)
        np.testing.assert_allclose(got["alice/tiny@v1"]["scores"], local_scores(checkpoints["v1"]), atol=1e-6)
        assert got["bob/none@None"]["error"] == (
            f"bob/none: no such model repo on the Hub at {hub.url}, or the token may not read it (a private repo: "
            "log in with `hf auth login` or set HF_TOKEN)")
        assert got["alice/tiny@v9"]["error"] == (
            f"alice/tiny (revision v9): the model repo has no revision 'v9' on the Hub at {hub.url}")
        blobs = {hashlib.sha1(p.read_bytes()).digest() for folder in checkpoints.values() for p in folder.rglob("*")
                 if p.is_file()}
        assert fetched == len(blobs)  # each file once: a file both revisions share comes from the cache

        before = len(hub.requests)
        offline = load_in_process(hub.url, home, [["alice/tiny", None], ["alice/tiny", "v1"], ["carol/other", None]],
                                  offline=True)
        assert len(hub.requests) == before  # offline: nothing asked of the Hub
    assert offline["alice/tiny@None"] == got["alice/tiny@None"] and offline["alice/tiny@v1"] == got["alice/tiny@v1"]
    assert offline["carol/other@None"]["error"] == (
        "carol/other: not a local folder, offline mode is set (HF_HUB_OFFLINE=1), and the model is not in the local "
        f"cache ({home / 'hub'})")


def test_a_hub_that_is_down_is_one_sentence_and_the_cache_still_serves(checkpoints, tmp_path):
    home = tmp_path / "hf_home"
    with serving() as hub:
        hub.add("alice/tiny", checkpoints["main"])
        load_in_process(hub.url, home, [["alice/tiny", None]])
        hub.down = True
        got = load_in_process(hub.url, home, [["alice/tiny", None], ["dave/new", None]])
    assert got["alice/tiny@None"]["tasks"] == ["sst", "para"]  # huggingface_hub falls back to the cache
    message = got["dave/new@None"]["error"]
    assert message.startswith("dave/new: ") and "\n" not in message, message


def test_a_local_folder_takes_no_revision_and_a_path_is_never_a_hub_id(checkpoints):
    with pytest.raises(MtbertError, match=r"^revision: .* is a local folder; a revision only applies to a Hub model"):
        MultiTaskModel.from_pretrained(checkpoints["main"], revision="v1")
    for folder in ("a/b/c", "/no/such", "./x/y", "single"):  # folders, not repo ids: no Hub is asked
        with pytest.raises(MtbertError, match=rf"^{re.escape(folder.removeprefix('./'))}: not an mtbert checkpoint"):
            MultiTaskModel.from_pretrained(folder)


def test_a_subfolder_of_a_local_folder_and_a_subfolder_that_leaves_it(checkpoints):
    parent = checkpoints["main"].parent
    np.testing.assert_allclose(MultiTaskModel.from_pretrained(parent, subfolder="main/").predict("sst", TEXTS).scores,
                               local_scores(checkpoints["main"]), atol=1e-6)
    for bad in ("../main", "/abs"):
        with pytest.raises(MtbertError, match=r"^subfolder: .* must be a relative folder inside the checkpoint"):
            MultiTaskModel.from_pretrained(parent, subfolder=bad)
