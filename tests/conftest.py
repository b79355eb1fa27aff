"""Shared fixtures: a tiny random BERT (with the bundled backbone's tokenizer) and tiny CS224N-format data."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
import torch
from hypothesis import settings

# Property tests draw the same examples on every run (CI must not pass or fail by chance); no example database.
settings.register_profile("mtbert", derandomize=True, database=None)
settings.load_profile("mtbert")

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Under pytest-xdist (`make test` runs one worker per core), the workers share the cores: each worker, and every
# process it starts (the end-to-end tests' CLI runs), gets its share of torch threads instead of all of them.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    _threads = max(1, len(os.sched_getaffinity(0)) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    os.environ["OMP_NUM_THREADS"] = str(_threads)
    torch.set_num_threads(_threads)

WORDS = ("good bad movie film great awful fun dull plot actor story love hate the a is was very not "
         "what how why can you do make best way learn play dog cat man woman eat run fast slow").split()


def _sentence(rng: random.Random, n: int = 8) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, n)))


def _hex(rng: random.Random) -> str:
    return "".join(rng.choice("0123456789abcdef") for _ in range(25))


def write_tiny_data(folder: Path, rows: int = 40, seed: int = 0) -> Path:
    """Write the eight CS224N-layout files (minus Quora test) with `rows` rows each, learnable labels."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)

    def sst(labeled: bool) -> str:
        lines = ["\tid\tsentence\tsentiment" if labeled else "0\t\tid\tsentence"]
        for i in range(rows):
            label = rng.randint(0, 4)
            text = ("great fun love " if label >= 3 else "awful dull hate ") + _sentence(rng)
            row = f"{i}\t{_hex(rng)}\t{text}\t{label}" if labeled else f"{i + 1}\t{float(i)}\t{_hex(rng)}\t{text}"
            lines.append(row)
        return "\n".join(lines) + "\n"

    def pair(label_kind: str, labeled: bool) -> str:
        head = "\tid\tsentence1\tsentence2" + ("\tis_duplicate" if label_kind == "para" else "\tsimilarity")
        lines = [head if labeled else "\tid\tsentence1\tsentence2"]
        for i in range(rows):
            a = _sentence(rng)
            same = rng.random() < 0.5
            b = a if same else _sentence(rng)
            label = ("1.0" if same else "0.0") if label_kind == "para" else (f"{rng.uniform(3.5, 5):.1f}" if same
                                                                           else f"{rng.uniform(0, 2):.1f}")
            lines.append(f"{i}\t{_hex(rng)}\t{a}\t{b}\t{label}" if labeled else f"{i}\t{_hex(rng)}\t{a}\t{b}")
        return "\n".join(lines) + "\n"

    (folder / "ids-sst-train.csv").write_text(sst(True))
    (folder / "ids-sst-dev.csv").write_text(sst(True))
    (folder / "ids-sst-test-student.csv").write_text(sst(False))
    (folder / "quora-train.csv").write_text(pair("para", True))
    (folder / "quora-dev.csv").write_text(pair("para", True))
    (folder / "sts-train.csv").write_text(pair("sts", True))
    (folder / "sts-dev.csv").write_text(pair("sts", True))
    (folder / "sts-test-student.csv").write_text(pair("sts", False))
    return folder


def make_tiny_model(folder: Path, hidden_size: int = 32) -> Path:
    """A randomly initialised 2-layer BERT (hidden 32 unless told) saved with the bundled backbone's tokenizer."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from mtbert.model import default_backbone

    tokenizer = AutoTokenizer.from_pretrained(default_backbone(), use_fast=True)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=hidden_size, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=2 * hidden_size, max_position_embeddings=128)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def small_model_dir(tmp_path_factory) -> Path:
    """The tiny BERT at hidden 256: its steps take tens of milliseconds, long enough that seconds rounded to 0.1 ms
    (bench JSON) still give their ratios to 1%, and far shorter than the bundled backbone's."""
    return make_tiny_model(tmp_path_factory.mktemp("small-bert"), hidden_size=256)


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory) -> Path:
    return write_tiny_data(tmp_path_factory.mktemp("tiny-data"))


@pytest.fixture()
def tiny_config(tiny_model_dir, tiny_data_dir, tmp_path) -> dict:
    """A config mapping for a few-second run of the tiny model on the tiny data."""
    return {
        "output_dir": str(tmp_path / "run"),
        "model_name_or_path": str(tiny_model_dir),
        "data_dir": str(tiny_data_dir),
        "tasks": ["sst", "para", "sts"],
        "method": "sum",
        "per_device_train_batch_size": 4,
        "per_device_eval_batch_size": 16,
        "samples_per_task_per_epoch": 8,
        "num_train_epochs": 2,
        "learning_rate": 1e-3,
        "max_length": 32,
        "logging_steps": 1,
        "seed": 0,
    }
