"""The one rule for a folder that a command writes its output into (`mtbert ensemble`, `report`, `export`, ...).

A command writes into a folder that is new, empty, or an earlier output of the same command (which it then
updates); any other folder (a run, another command's output, the user's files) is refused in one sentence
before anything is written, so that no command replaces files it did not write. `mtbert train` follows the same
rule with its documented ways on (`--overwrite_output_dir`, `--resume_from_checkpoint`).

```python
claim_output_dir(out, "ensemble", "--output_dir", is_ensemble_output)   # refuses another run's folder
```
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from mtbert.errors import MtbertError
from mtbert.runs.layout import LOCK


def contents(folder: Path) -> list[Path]:
    """What `folder` holds (its run lock aside); empty when it does not exist."""
    if not folder.is_dir():
        return []
    return [p for p in folder.iterdir() if p.name != LOCK]


def claim_output_dir(folder: Path, command: str, flag: str, own: Callable[[Path], bool] | None = None) -> None:
    """Refuse, in one sentence naming `flag`, a `folder` that is a file, or that is not empty and not an earlier
    output of `mtbert command` (`own(folder)` says whether it is; None: the command never updates a folder)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise MtbertError(f"{flag}: {folder} is a file; give a new or empty folder")
    if not contents(folder) or (own is not None and own(folder)):
        return
    earlier = f" and is not an earlier output of mtbert {command}" if own is not None else ""
    raise MtbertError(f"{flag}: {folder} is not empty{earlier}; give a new or empty folder (mtbert {command} "
                      "replaces no files it did not write)")


def inside(folder: Path, others: list[Path]) -> Path | None:
    """The first of `others` that `folder` is, or is inside of (resolved paths); None when none."""
    resolved = Path(folder).resolve()
    for other in others:
        other_resolved = Path(other).resolve()
        if other_resolved == resolved or other_resolved in resolved.parents:
            return other
    return None
