"""mkdocs hook: the reference pages written from the code itself, so that they cannot drift from it.

- reference/config.md: every TrainConfig key with its type, default and help text (the help of `mtbert train --help`);
- reference/cli.md: `mtbert --help` and every subcommand's help, as argparse prints them;
- reference/presets.md: every shipped preset with the first line of its comment;
- results.md: benchmarks/RESULTS.md.

`tests/unit/test_docs.py` checks that every config key and every public Python name appears in the reference.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))


def config_reference() -> str:
    """The config keys as a Markdown table, in the order of TrainConfig."""
    from mtbert.config import TWO_STEP_ONLY_KEYS, TrainConfig

    hints = typing.get_type_hints(TrainConfig)
    lines = ["# Config keys", "",
             "Every key of a run's config: in its YAML file, as `--key value` after `mtbert train CONFIG` (dots nest: "
             "`--two_step.learning_rate 3e-6`), or as a keyword of `mtbert.train` and `mtbert.TrainConfig`. An unknown "
             "key, a wrong type or a bad value is one sentence naming the key (exit code 2, or `mtbert.ConfigError`).",
             "Generated from `mtbert.config.TrainConfig`, the same help as `mtbert train --help`.", "",
             "| key | type | default | what it does |", "|---|---|---|---|"]
    for field in dataclasses.fields(TrainConfig):
        default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
        kind = _type_name(hints[field.name])
        lines.append(f"| `{field.name}` | {kind} | `{default!r}` | {_cell(field.metadata.get('help', ''))} |")
    lines += ["", "Keys of the `two_step` mapping that are not run keys: "
              + ", ".join(f"`two_step.{k}`" for k in sorted(TWO_STEP_ONLY_KEYS))
              + " (`init_from`: a finished run whose best model is stage 1; `keep_stage1`: stage 1's model competes as "
              "step 0 of each task's stage 2). Its other keys override stage 1's for stage 2.", ""]
    return "\n".join(lines)


def cli_reference() -> str:
    """`mtbert --help` and each subcommand's, nested subcommands included."""
    from mtbert.cli import build_parser

    lines = ["# Command line", "", "Generated from the `mtbert` command's own help (`mtbert COMMAND --help`).", ""]
    for name, parser in _parsers(build_parser(), "mtbert"):
        lines += [f"## `{name}`", "", "```text", parser.format_help().rstrip(), "```", ""]
    return "\n".join(lines)


def presets_reference() -> str:
    """Every training preset and bench table."""
    from mtbert.presets import TABLES, names, root

    about = ("The configs shipped with mtbert, by name: `mtbert train NAME`, `mtbert.train(\"NAME\")`; the bench "
             "tables: `mtbert bench quality --configs NAME`. `mtbert presets` lists them; a path that exists wins over "
             "a name. They are the repository's `configs/` folder, carried by the wheel.")
    lines = ["# Presets", "", about, "", "| preset | what it is |", "|---|---|"]
    for name in names():
        first = next((line.lstrip("# ").strip() for line in (root() / f"{name}.yaml").read_text().splitlines()
                      if line.startswith("#")), "")
        lines.append(f"| `{name}` | {_cell(first)} |")
    lines += ["", "| bench table | folder |", "|---|---|"]
    lines += [f"| `{name}` | `{folder}/` |" for name, folder in TABLES.items()]
    return "\n".join(lines) + "\n"


def results_page() -> str:
    text = (ROOT / "benchmarks" / "RESULTS.md").read_text(encoding="utf-8")
    note = "This page is `benchmarks/RESULTS.md` of the repository: every measured table and the commands that made it."
    return f"!!! note\n    {note}\n\n{text}"


def _parsers(parser: argparse.ArgumentParser, name: str):
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _parsers(sub, f"{name} {sub_name}")


def _type_name(hint) -> str:
    text = getattr(hint, "__name__", None) if typing.get_origin(hint) is None else None
    return _cell(text or str(hint).replace("typing.", ""))


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


PAGES = {"reference/config.md": config_reference, "reference/cli.md": cli_reference,
         "reference/presets.md": presets_reference, "results.md": results_page}


def on_files(files, config):
    """mkdocs: add the generated pages to the site's files."""
    from mkdocs.structure.files import File

    for path, build in PAGES.items():
        files.append(File.generated(config, path, content=build()))
    return files
