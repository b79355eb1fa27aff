"""The Python API: `mtbert.train(config, **overrides)`, `mtbert.TrainConfig` checked on construction, the root's
names, and the version from the package metadata."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import yaml

import mtbert
from mtbert.api import resolve_config
from mtbert.cli import main
from mtbert.config import build_config, load_config
from mtbert.errors import ConfigError

BAD_VALUES = [
    ({"learning_rate": -1}, "learning_rate: must be positive, not -1.0"),
    ({"max_length": 4}, "max_length: must be at least 8 tokens"),
    ({"method": "nope"}, "method: 'nope' is not one of "),
    ({"per_device_train_batch_size": "x"}, "per_device_train_batch_size: must be an integer, not 'x'"),
    ({"packing": "maybe"}, "packing: must be true or false, not 'maybe'"),
    ({"task_ratio": "1:2"}, "task_ratio: '1:2' has 2 parts but there are 3 tasks (sst, para, sts)"),
    ({"two_step": {"learning_rate": 0}}, "two_step.learning_rate: must be positive, not 0.0"),
    ({"tasks": []}, "tasks: must be a non-empty list"),
]


@pytest.mark.parametrize(("values", "message"), BAD_VALUES)
def test_train_config_refuses_what_yaml_refuses_with_the_same_sentence(values, message, tmp_path):
    with pytest.raises(ConfigError) as built:
        mtbert.TrainConfig(**values)
    assert str(built.value).startswith(message)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(values))
    with pytest.raises(ConfigError) as loaded:
        load_config(path)
    assert str(loaded.value) == str(built.value)
    assert mtbert.ConfigError is ConfigError and issubclass(ConfigError, mtbert.MtbertError)


def test_train_config_converts_values_as_yaml_does():
    cfg = mtbert.TrainConfig(learning_rate="3e-5", max_steps=10.0, bf16=False, tasks=["sts"], method="single")
    assert (cfg.learning_rate, cfg.max_steps, cfg.bf16) == (3e-5, 10, "false")
    assert cfg == build_config({"learning_rate": 3e-5, "max_steps": 10, "bf16": "false", "tasks": ["sts"],
                                "method": "single"})


def test_configs_from_a_preset_a_path_a_mapping_and_a_train_config_with_overrides(tmp_path):
    quick = resolve_config("quick", max_steps=10, method="cagrad")
    assert (quick.max_steps, quick.method, quick.output_dir) == (10, "cagrad", "runs/quick")
    assert resolve_config("configs/quick.yaml", max_steps=10, method="cagrad") == quick
    assert resolve_config(Path("configs/quick.yaml"), max_steps=10, method="cagrad") == quick
    assert resolve_config(quick.to_dict()) == quick
    assert resolve_config(quick, seed=7).seed == 7 and quick.seed == 42  # a copy; the given config is kept
    nested = resolve_config("smoke-two-step", two_step={"learning_rate": 1e-5})
    assert nested.two_step == {"num_train_epochs": 1, "samples_per_task_per_epoch": 48, "learning_rate": 1e-5}
    with pytest.raises(ConfigError, match=r"^nope: unknown config key"):
        resolve_config("quick", nope=1)
    with pytest.raises(ConfigError, match=r"^config: give a TrainConfig, a mapping, a YAML file or a preset name"):
        resolve_config(42)


def test_train_runs_a_mapping_with_overrides_and_returns_the_results(tiny_config, tmp_path):
    results = mtbert.train(tiny_config, max_steps=1, num_train_epochs=1, tasks=["sst"], method="single",
                           output_dir=str(tmp_path / "api"))
    saved = json.loads((tmp_path / "api" / "results.json").read_text())
    assert results == saved and set(results) >= {"sst_acc", "overall"}
    assert yaml.safe_load((tmp_path / "api" / "config.yaml").read_text())["max_steps"] == 1
    with pytest.raises(mtbert.MtbertError, match="is not empty"):  # mtbert train's own refusal
        mtbert.train(tiny_config, max_steps=1, tasks=["sst"], method="single", output_dir=str(tmp_path / "api"))


def test_a_bad_override_writes_nothing(tiny_config, tmp_path):
    with pytest.raises(ConfigError, match=r"^learning_rate: must be positive"):
        mtbert.train(tiny_config, learning_rate=-1, output_dir=str(tmp_path / "never"))
    assert not (tmp_path / "never").exists()


def test_version_comes_from_the_package_metadata(capsys):
    expected = metadata.version("mtbert")
    assert mtbert.__version__ == expected
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"mtbert {expected}"


def test_the_root_names_are_public_and_import_lazily():
    for name in mtbert.__all__:
        assert getattr(mtbert, name) is not None, name
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        mtbert.nope  # noqa: B018
    code = "import sys, mtbert; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_install_hints_name_what_is_installable():
    from mtbert.distribution import install_hint

    hint = install_hint("wandb")
    assert 'pip install -e ".[wandb]"' in hint and f"mtbert-{mtbert.__version__}-py3-none-any.whl[wandb]" in hint
    src = Path(mtbert.__file__).parent
    offenders = [str(p) for p in src.rglob("*.py") if re.search(r"pip install \"?mtbert\[", p.read_text())]
    assert not offenders, offenders
