"""Pushes to a Hugging Face Hub model repo: `mtbert export --push_to_hub` (an exported folder in one commit) and
`push_to_hub` during training (training/hub_push.py).

Only huggingface_hub's API is used: the token is its usual one (HF_TOKEN, else `hf auth login`'s), the Hub its
HF_ENDPOINT, and HF_HUB_OFFLINE=1 refuses the push before anything is written.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from mtbert.errors import MtbertError

if TYPE_CHECKING:
    from huggingface_hub import CommitInfo
    from huggingface_hub.errors import HfHubHTTPError


def check_push(repo_id: str) -> None:
    """Refuse a push that cannot happen, before the export writes anything: a bad repo id, or offline mode."""
    from huggingface_hub import constants

    from mtbert.config import is_repo_id

    if not is_repo_id(repo_id):
        raise MtbertError(f"--push_to_hub: {repo_id!r} is not a Hub repo id; give owner/name (letters, digits, "
                          "'-', '_' and '.', at most 96 characters, no '--' or '..')")
    if constants.is_offline_mode():
        raise MtbertError("--push_to_hub: the push needs the Hub, but offline mode is set (HF_HUB_OFFLINE=1); "
                          "unset it to push, or export without --push_to_hub")


class PushFailed(MtbertError):
    """A push that the Hub refused or that did not reach it; `retryable`: a later try may succeed (no answer, a
    time-out, 408, 429 or a 5xx status), unlike a refusal (a bad token, no such repo, a rejected file)."""

    def __init__(self, message: str, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


def push_folder(folder: Path, repo_id: str, *, private: bool = False, revision: str | None = None,
                commit_message: str) -> tuple[str, str]:
    """Create the model repo `repo_id` if missing (private if `private`; an existing repo keeps its visibility),
    create branch `revision` if given and missing, and upload `folder` in one commit.

    Returns the repo's URL and the commit's URL. A refusal or an unreachable Hub raises MtbertError saying which
    step failed and that `folder` was written and can be uploaded later.
    """
    try:
        repo_url = create_repo(repo_id, private=private, revision=revision)
        commit = upload(folder, repo_id, revision=revision, commit_message=commit_message)
    except PushFailed as err:
        raise MtbertError(str(err) + _written(folder, repo_id, revision, private)) from None
    return repo_url, commit.commit_url


def create_repo(repo_id: str, *, private: bool | None = False, revision: str | None = None,
                flag: str = "--push_to_hub") -> str:
    """Create the model repo `repo_id` if missing (private if `private`; an existing repo keeps its visibility) and
    branch `revision` if given and missing; returns the repo's URL. A failure raises PushFailed naming `flag`."""
    from huggingface_hub import HfApi

    api = HfApi()
    step = f"create the repo {repo_id}"
    with _failures(api.endpoint, flag, lambda: step):
        repo_url = api.create_repo(repo_id, repo_type="model", private=True if private else None, exist_ok=True)
        if revision not in (None, "main"):
            step = f"create the branch {revision} of {repo_id}"
            api.create_branch(repo_id, branch=revision, repo_type="model", exist_ok=True)
    return str(repo_url)


def upload(folder: Path, repo_id: str, *, revision: str | None = None, commit_message: str,
           delete_patterns: list[str] | None = None, flag: str = "--push_to_hub") -> CommitInfo:
    """Upload `folder` into the existing model repo `repo_id` in one commit (removing the repo's files that match
    `delete_patterns` and are not in `folder`); returns the commit. A failure raises PushFailed naming `flag`."""
    from huggingface_hub import HfApi

    api = HfApi()
    with _failures(api.endpoint, flag, lambda: f"upload {folder} to {repo_id}"):
        return api.upload_folder(repo_id=repo_id, folder_path=folder, repo_type="model", revision=revision,
                                 commit_message=commit_message, delete_patterns=delete_patterns)


@contextmanager
def _failures(endpoint: str, flag: str, step: Callable[[], str]) -> Iterator[None]:
    """Turn huggingface_hub's and httpx's errors into one PushFailed sentence naming `flag` and the step."""
    import httpx2  # huggingface_hub's HTTP client: it does not wrap a connection failure in its own errors
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    try:
        yield
    except HfHubHTTPError as err:
        status = err.response.status_code
        if status in RETRYABLE_STATUS or status >= 500:  # busy or down: not a refusal
            raise PushFailed(f"{flag}: the Hub at {endpoint} could not {step()} ({_said(err)})", True) from None
        raise PushFailed(_refused(endpoint, flag, step(), err), False) from None
    except (httpx2.TransportError, OfflineModeIsEnabled) as err:
        raise PushFailed(f"{flag}: could not reach the Hub at {endpoint} to {step()} "
                         f"({type(err).__name__}: {_one_line(err)})",
                         not isinstance(err, OfflineModeIsEnabled)) from None
    except ValueError as err:  # an answer huggingface_hub cannot use, e.g. the model card's metadata refused
        raise PushFailed(f"{flag}: the Hub at {endpoint} did not accept the request to {step()} "
                         f"({_one_line(err)})", False) from None
    except (OSError, RuntimeError) as err:  # the large-file (Xet) upload of the weights failed
        raise PushFailed(f"{flag}: could not {step()} ({type(err).__name__}: {_one_line(err)})", True) from None


RETRYABLE_STATUS = (408, 429)  # and every 5xx: the Hub was busy or down, not refusing


def _refused(endpoint: str, flag: str, step: str, err: HfHubHTTPError) -> str:
    status = err.response.status_code
    said = _said(err)
    advice = ""
    if status in (401, 403):
        advice = "; log in with `hf auth login` or set HF_TOKEN (a token with write access)"
    elif status == 404:
        advice = "; check the repo id and that the token may write to it"
    return f"{flag}: the Hub at {endpoint} refused to {step} ({said}){advice}"


def _said(err: HfHubHTTPError) -> str:
    """The Hub's answer: its status and reason, and its message when it gave one."""
    said = f"{err.response.status_code} {err.response.reason_phrase}".strip()
    if err.server_message:
        said += f": {_one_line(err.server_message)}"
    return said


def _written(folder: Path, repo_id: str, revision: str | None, private: bool) -> str:
    """The end of a failed push's message: the folder is kept, and the command that uploads it later."""
    flags = (f" --revision {shlex.quote(revision)}" if revision not in (None, "main") else "") + (
        " --private" if private else "")
    return (f"; the export {folder} was written and can be uploaded later with "
            f"`hf upload {repo_id} {shlex.quote(str(folder))}{flags}`")


def _one_line(what: object) -> str:
    """`what`'s message on one line, without a final period (it goes inside parentheses)."""
    return " ".join(line.strip() for line in str(what).splitlines() if line.strip()).rstrip(".")
