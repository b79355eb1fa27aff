"""mtbert as an installed distribution: its version (from the package metadata) and how to install an extra."""

from __future__ import annotations

from importlib import metadata

NAME = "mtbert"


def version() -> str:
    """The installed mtbert's version, as pip recorded it ("0+unknown" for a source tree that is not installed)."""
    try:
        return metadata.version(NAME)
    except metadata.PackageNotFoundError:
        return "0+unknown"


def install_hint(extra: str) -> str:
    """The commands that install the optional extra `extra` while mtbert is not on a package index: from a
    checkout of mtbert, or from its built wheel."""
    return (f'pip install -e ".[{extra}]" in the mtbert checkout, or pip install '
            f'"mtbert-{version()}-py3-none-any.whl[{extra}]" with the built wheel (make wheel)')
