"""The documentation's reference pages cover the code: every config key (with its help), every command, every
preset and every public Python name. (`mkdocs build --strict` itself runs in CI: `make docs`.)"""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import pytest

import mtbert
from mtbert.cli import build_parser
from mtbert.config import TWO_STEP_ONLY_KEYS, TrainConfig
from mtbert.presets import names

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def hook():
    spec = importlib.util.spec_from_file_location("docs_reference_hook", ROOT / "docs" / "hooks" / "reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_config_key_is_in_the_reference_with_its_help(hook):
    page = hook.config_reference()
    for field in dataclasses.fields(TrainConfig):
        row = next((line for line in page.splitlines() if line.startswith(f"| `{field.name}` |")), None)
        assert row is not None, field.name
        assert field.metadata["help"].replace("|", "\\|") in row, field.name
    for key in TWO_STEP_ONLY_KEYS:
        assert f"`two_step.{key}`" in page


def test_every_command_and_preset_is_in_the_reference(hook):
    cli, presets = hook.cli_reference(), hook.presets_reference()
    commands = [action.choices for action in build_parser()._actions if hasattr(action, "choices") and
                isinstance(action.choices, dict)][0]
    for command in commands:
        assert f"## `mtbert {command}`" in cli, command
    assert "## `mtbert bench quality`" in cli and "## `mtbert data download`" in cli
    for name in names():
        assert f"| `{name}` |" in presets, name
    assert "| `cs224n` | `bench/` |" in presets


def test_every_public_python_name_is_in_the_api_reference():
    page = (ROOT / "docs" / "reference" / "python.md").read_text()
    for name in mtbert.__all__:
        assert f"`{name}`" in page or f".{name}\n" in page, name


def test_every_page_of_the_docs_folder_is_in_the_navigation():
    import yaml

    nav = (ROOT / "mkdocs.yml").read_text()
    generated = {"reference/config.md", "reference/cli.md", "reference/presets.md", "results.md"}
    pages = {p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*.md")} | generated
    assert yaml.safe_load(nav)["docs_dir"] == "docs"
    for page in pages:
        assert page in nav, page
