"""A checkpoint by Hub id: `MultiTaskModel.from_pretrained("user/repo", revision=...)` downloads the repo's snapshot
through huggingface_hub (its cache, HF_ENDPOINT, HF_TOKEN and offline mode) and loads the folder it gives."""

from __future__ import annotations

from pathlib import Path

from mtbert.errors import MtbertError


def checkpoint_folder(name_or_path: str | Path, revision: str | None = None, subfolder: str | None = None) -> Path:
    """The local folder of a checkpoint: `name_or_path` itself when it exists, else the snapshot of the Hub model
    repo it names (downloaded, or taken from the cache when offline or unchanged); with `subfolder`, that folder
    of it (only its files are downloaded: a two-step run's repo holds one model per task, `tasks/<task>/best`).

    Every failure is one MtbertError naming the repo: no such repo (or no access), no such revision, or the Hub
    out of reach with nothing cached.
    """
    path = Path(name_or_path)
    inside = (subfolder or "").rstrip("/")
    if inside and (Path(inside).is_absolute() or ".." in Path(inside).parts):
        raise MtbertError(f"subfolder: {subfolder!r} must be a relative folder inside the checkpoint")
    if path.exists() or not looks_like_repo_id(str(name_or_path)):
        if revision is not None:
            raise MtbertError(f"revision: {path} is a local folder; a revision only applies to a Hub model repo")
        return path / inside if inside else path  # a missing folder is reported by the loader, naming its file
    repo_id = str(name_or_path)
    import httpx2  # huggingface_hub's HTTP client: a connection failure is not wrapped in its own errors
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    at = f"the Hub at {constants.ENDPOINT}"
    which = f"{repo_id}" + (f" (revision {revision})" if revision else "") + (f", folder {inside}" if inside else "")
    try:
        snapshot = Path(snapshot_download(repo_id, revision=revision, repo_type="model",
                                          allow_patterns=f"{inside}/*" if inside else None))
        return snapshot / inside if inside else snapshot
    except GatedRepoError:
        raise MtbertError(f"{which}: the model repo is gated on {at}; accept its terms and log in with "
                          "`hf auth login` or set HF_TOKEN") from None
    except RepositoryNotFoundError:
        raise MtbertError(f"{which}: no such model repo on {at}, or the token may not read it (a private repo: "
                          "log in with `hf auth login` or set HF_TOKEN)") from None
    except RevisionNotFoundError:
        raise MtbertError(f"{which}: the model repo has no revision {revision!r} on {at}") from None
    except LocalEntryNotFoundError:
        why = "offline mode is set (HF_HUB_OFFLINE=1)" if constants.is_offline_mode() else f"{at} could not be reached"
        raise MtbertError(f"{which}: not a local folder, {why}, and the model is not in the local cache "
                          f"({constants.HF_HUB_CACHE})") from None
    except (HfHubHTTPError, httpx2.TransportError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise MtbertError(f"{which}: could not download the model from {at} ({first[:200]})") from None


def looks_like_repo_id(text: str) -> bool:
    """Whether `text` is a Hub model repo id, `owner/name` (a path with more parts, or absolute, or relative to
    `.`, is a folder; so is a bare name, as before Hub ids were taken)."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    if text.count("/") != 1 or text.startswith(("/", ".", "~")) or "\\" in text:
        return False
    try:
        validate_repo_id(text)
    except HFValidationError:
        return False
    return True
