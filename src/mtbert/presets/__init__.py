"""The configs shipped with mtbert, addressable by name.

A training preset is a config file named by its path under the presets folder without `.yaml`: `main` (the CPU
main job), `quick`, `smoke`, `smoke-two-step`, `paper/pcgrad` and the other CS224N paper configs, `bench/<row>`, ...
(`mtbert train quick`, `mtbert.train("smoke")`). A bench table is a folder of row configs with its table.yaml:
`cs224n` (the CS224N report's table on the bundled all-MiniLM-L6-v2) and `cs224n-base` (the same rows on
all-mpnet-base-v2), as in `mtbert bench quality --configs cs224n`. A path that exists always wins over a name.

The presets folder is the repository's `configs/`: the wheel carries a copy of it as `mtbert/presets/` (setup.py
copies it at build time), and in a checkout (editable install or `PYTHONPATH=src`) it is read in place.
"""

from __future__ import annotations

import os
from pathlib import Path

from mtbert.errors import ConfigError

TABLES = {"cs224n": "bench", "cs224n-base": "bench-base"}  # bench table name -> folder under the presets
_MARKER = "quick.yaml"  # a file every presets folder has
_SKIPPED = {"table.yaml"}  # the bench tables' descriptions are not training configs


def root() -> Path:
    """The presets folder: the wheel's `mtbert/presets/`, else the checkout's `configs/`."""
    packaged = Path(__file__).resolve().parent
    if (packaged / _MARKER).is_file():
        return packaged
    checkout = packaged.parents[2] / "configs"  # src/mtbert/presets -> the repository root
    if (checkout / _MARKER).is_file():
        return checkout
    raise ConfigError(f"{packaged}: the presets are missing from this installation of mtbert (reinstall it)")


def names() -> list[str]:
    """Every training preset's name, sorted (`bench/pcgrad`, ..., `quick`, `smoke`, ...)."""
    base = root()
    found = [p.relative_to(base).with_suffix("").as_posix() for p in base.rglob("*.yaml")
             if p.name not in _SKIPPED and "data" not in p.relative_to(base).parts]
    return sorted(found)


def config_path(name_or_path: str | os.PathLike[str]) -> Path:
    """The config file a `mtbert train` argument names: an existing path as given, else the preset of that name.

    A path-like argument that does not exist (one with a `.yaml` suffix or a folder separator that is no preset) is
    returned unchanged, so that loading it reports the missing file; an unknown bare name is one ConfigError.
    """
    path = Path(name_or_path)
    if path.exists():
        return path
    text = str(name_or_path).removesuffix(".yaml").removesuffix(".yml")
    known = names()
    if text in known:
        return root() / f"{text}.yaml"
    if path.suffix in (".yaml", ".yml") or os.sep in str(name_or_path) or "/" in str(name_or_path):
        return path
    top = ", ".join(n for n in known if "/" not in n)
    raise ConfigError(f"{name_or_path}: neither a config file nor a preset name (presets: {top}, and paper/<name>, "
                      "bench/<row>, examples/<name>: see `mtbert presets`)")


def table_dir(name_or_path: str | os.PathLike[str]) -> Path:
    """The folder of row configs a `mtbert bench quality --configs` argument names: an existing folder as given,
    else the bench table of that name (`cs224n`, `cs224n-base`); anything else is returned unchanged."""
    path = Path(name_or_path)
    if path.exists() or str(name_or_path) not in TABLES:
        return path
    return _shown(root() / TABLES[str(name_or_path)])


def _shown(path: Path) -> Path:
    """`path` relative to the current folder when it lies inside it (so tables print `configs/bench`), else as is."""
    try:
        return path.relative_to(Path.cwd())
    except ValueError:
        return path
