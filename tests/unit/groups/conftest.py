"""Fixtures of the input_group tests: a tiny JSON Lines file whose rows carry two labels of the same words, and
an intent-and-slots data set written both as JSON Lines and as CoNLL tags plus intent files."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
from helpers.groups import FILLER, group_tasks, write_group_data


@pytest.fixture(scope="session")
def group_data_dir(tiny_data_dir, tmp_path_factory) -> Path:
    """The tiny CS224N files and the group's files, in one folder."""
    folder = tmp_path_factory.mktemp("group-data") / "data"
    shutil.copytree(tiny_data_dir, folder)
    return write_group_data(folder)


@pytest.fixture()
def group_config(tiny_config, group_data_dir) -> dict:
    """A tiny run of the group (intent, mood) and sst on its own."""
    return {**tiny_config, "data_dir": str(group_data_dir), "tasks": [*group_tasks(), "sst"]}


SLOT_WORDS = {"artist": (("adele",), ("nina", "simone")), "city": (("paris",), ("new", "york"))}
INTENT_WORDS = {"play": ("play", "hear"), "book": ("book", "reserve")}


def write_joint_data(folder: Path, rows: int = 40, seed: int = 0) -> Path:
    """The same utterances (an intent, BIO slot tags) two ways: `joint-{split}.jsonl` rows `{"tokens", "intent",
    "slots"}` without ids (ids are line numbers), and `joint-{split}.conll` with the intents in
    `joint-{split}-intent.txt` (line-aligned) and `joint-{split}-intent.tsv` (`id<TAB>label`, shuffled). The test
    split holds words alone."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "dev", "test"):
        jsonl, conll, intents = [], [], []
        for _ in range(rows if split != "test" else 6):
            intent, slot = rng.choice(sorted(INTENT_WORDS)), rng.choice(sorted(SLOT_WORDS))
            entity = rng.choice(SLOT_WORDS[slot])
            words = [rng.choice(INTENT_WORDS[intent]), *rng.sample(FILLER, 2), *entity, rng.choice(FILLER)]
            tags = ["O", "O", "O", *(f"{'B' if k == 0 else 'I'}-{slot}" for k in range(len(entity))), "O"]
            labeled = split != "test"
            jsonl.append(json.dumps({"tokens": words, **({"intent": intent, "slots": tags} if labeled else {})}))
            conll.append("".join(f"{w}\t{t}\n" if labeled else f"{w}\n" for w, t in zip(words, tags, strict=True)))
            intents.append(intent)
        (folder / f"joint-{split}.jsonl").write_text("\n".join(jsonl) + "\n")
        (folder / f"joint-{split}.conll").write_text("\n".join(conll))
        if split != "test":
            (folder / f"joint-{split}-intent.txt").write_text("".join(f"{i}\n" for i in intents))
            keyed = [f"{k}\t{i}\n" for k, i in enumerate(intents, start=1)]
            rng.shuffle(keyed)
            (folder / f"joint-{split}-intent.tsv").write_text("".join(keyed))
    return folder


def make_joint_tasks(two_files: bool, **intent_extra) -> list[dict]:
    """intent (single) and slots (token-classification) of input_group `joint`: from the JSON Lines files, or
    (`two_files`) from the CoNLL files with the intents in label files (train line-aligned, dev id-keyed)."""
    suffix = "conll" if two_files else "jsonl"
    common = {f"{s}_file": f"joint-{s}.{suffix}" for s in ("train", "dev", "test")}
    common.update(text_columns=["tokens"], input_group="joint", head_hidden_sizes=[])
    intent = {"name": "intent", "kind": "single", **common}
    if two_files:
        intent["label_files"] = {"train": "joint-train-intent.txt", "dev": "joint-dev-intent.tsv"}
    else:
        intent["label_column"] = "intent"
    slots = {"name": "slots", "kind": "token-classification", **common,
             **({} if two_files else {"label_column": "slots"})}
    return [{**intent, **intent_extra}, slots]


@pytest.fixture(scope="session")
def joint_data_dir(tmp_path_factory) -> Path:
    return write_joint_data(tmp_path_factory.mktemp("joint-data") / "data")


@pytest.fixture(scope="session")
def joint_config(tiny_model_dir, joint_data_dir):
    """`joint_config(two_files, output_dir, **intent_extra)`: a 4-step PCGrad run of the joint group on the tiny
    model, its tasks as `make_joint_tasks` gives them."""
    def make(two_files: bool, output_dir: Path, **intent_extra) -> dict:
        return {"output_dir": str(output_dir), "model_name_or_path": str(tiny_model_dir),
                "data_dir": str(joint_data_dir), "tasks": make_joint_tasks(two_files, **intent_extra),
                "method": "pcgrad", "per_device_train_batch_size": 8, "per_device_eval_batch_size": 16,
                "samples_per_task_per_epoch": 16, "max_steps": 4, "learning_rate": 3e-3, "max_length": 32,
                "logging_steps": 1, "seed": 0}
    return make


@pytest.fixture(scope="session")
def joint_tasks():
    """`joint_tasks(two_files, **intent_extra)`: the joint group's two tasks (`make_joint_tasks`)."""
    return make_joint_tasks
