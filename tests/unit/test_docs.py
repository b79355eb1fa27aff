"""The documentation's reference pages cover the code: every config key (with its help), every command, every
preset and every public Python name; README's links lead to files and headings that exist, and its results are
figures of benchmarks/RESULTS.md. (`mkdocs build --strict` itself runs in CI: `make docs`.)"""

from __future__ import annotations

import dataclasses
import importlib.util
import re
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


def _github_anchors(path: Path) -> set[str]:
    """The #anchors GitHub gives the headings of a Markdown file (outside code blocks)."""
    anchors, fenced = set(), False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and re.match(r"#{1,6} ", line):
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return anchors


def test_every_link_of_the_readme_points_to_a_file_and_heading_that_exist():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    assert links
    for link in links:
        assert not link.startswith(("http:", "https:")), link  # the docs are files of the checkout
        target, _, anchor = link.partition("#")
        path = ROOT / target
        assert path.is_file(), link
        if anchor:
            assert anchor in _github_anchors(path), link


def test_the_readme_results_are_copied_from_the_benchmark_results():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    results = readme.split("\n## Results\n", 1)[1].split("\n## ", 1)[0]
    measured = (ROOT / "benchmarks" / "RESULTS.md").read_text(encoding="utf-8")
    figures = re.findall(r"[+-]?\d\.\d{3}(?:–\d\.\d{3})?", results)
    assert len(figures) >= 20
    for figure in figures:
        assert figure in measured, figure
    rows = [line for line in results.splitlines() if re.match(r"\| `[^`]+`.* \| \d\.\d{3} \|", line)]
    assert len(rows) >= 4
    for row in rows:  # a table row's figures, in their order, are those of one row of RESULTS.md
        cells = row[row.index(" | 0.") + 1:]
        assert any(cells in line for line in measured.splitlines()), row
