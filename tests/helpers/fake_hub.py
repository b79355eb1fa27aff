"""Fake Hugging Face Hubs on 127.0.0.1.

`DownloadHub` serves model repos for download (the calls huggingface_hub makes for `snapshot_download`: the
revision's info, the recursive file tree, and each file's HEAD and GET by commit). Every request is recorded as
(method, path) in `requests`; `down = True` answers every request 503.

`UploadHub` takes uploads: the calls huggingface_hub 2.4.0 makes for `create_repo`, `create_branch` and
`upload_folder` of small files (repos/create, branch, validate-yaml, preupload, commit; anything else is a 404).
Every file is "regular" at preupload, so a commit's NDJSON body carries each file in base64 and no LFS or Xet
upload happens. `commits()` reads every commit back.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit


class DownloadHub(ThreadingHTTPServer):
    """Repos as {repo_id: {revision: folder}}; each (repo, revision) gets a fixed 40-hex commit id."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self.repos: dict[str, dict[str, Path]] = {}
        self.requests: list[tuple[str, str]] = []
        self.down = False

    def add(self, repo_id: str, folder: Path, revision: str = "main") -> str:
        """Serve `folder` as `repo_id` at `revision`; returns its commit id."""
        self.repos.setdefault(repo_id, {})[revision] = folder
        return self.commit(repo_id, revision)

    @staticmethod
    def commit(repo_id: str, revision: str) -> str:
        return hashlib.sha1(f"{repo_id}@{revision}".encode()).hexdigest()

    def find(self, repo_id: str, revision: str) -> tuple[str, Path] | None:
        for name, folder in self.repos.get(repo_id, {}).items():
            if revision in (name, self.commit(repo_id, name)):
                return self.commit(repo_id, name), folder
        return None

    def files_got(self) -> list[str]:
        return [path for method, path in self.requests if method == "GET" and "/resolve/" in path]


class _Handler(BaseHTTPRequestHandler):
    server: DownloadHub

    def log_message(self, format, *args) -> None:  # quiet
        pass

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def _serve(self, body: bool) -> None:
        self.server.requests.append((self.command, self.path))
        if self.server.down:
            return self._answer(503, {"error": "down"}, body)
        parts = [unquote(p) for p in urlsplit(self.path).path.strip("/").split("/")]
        if parts[:2] == ["api", "models"] and len(parts) >= 6 and parts[4] in ("revision", "tree"):
            repo_id, kind, revision = f"{parts[2]}/{parts[3]}", parts[4], parts[5]
            found = self._found(repo_id, revision, body)
            if found is None:
                return
            commit, folder = found
            files = sorted(p for p in folder.rglob("*") if p.is_file())
            if kind == "revision":
                siblings = [{"rfilename": p.relative_to(folder).as_posix()} for p in files]
                return self._answer(200, {"id": repo_id, "modelId": repo_id, "sha": commit, "private": False,
                                          "siblings": siblings}, body)
            tree = [{"type": "file", "path": p.relative_to(folder).as_posix(), "size": p.stat().st_size,
                     "oid": hashlib.sha1(p.read_bytes()).hexdigest()} for p in files]
            return self._answer(200, tree, body)
        if len(parts) >= 5 and parts[2] == "resolve":
            repo_id, revision, name = f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:])
            found = self._found(repo_id, revision, body)
            if found is None:
                return
            commit, folder = found
            path = folder / name
            if not path.is_file():
                return self._answer(404, {"error": "Entry not found"}, body, code="EntryNotFound")
            data = path.read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("ETag", f'"{hashlib.sha1(data).hexdigest()}"')
            self.send_header("X-Repo-Commit", commit)
            self.end_headers()
            if body:
                self.wfile.write(data)
            return None
        return self._answer(404, {"error": f"not in this fake Hub: {self.path}"}, body)

    def _found(self, repo_id: str, revision: str, body: bool) -> tuple[str, Path] | None:
        if repo_id not in self.server.repos:
            self._answer(404, {"error": "Repository not found"}, body, code="RepoNotFound")
            return None
        found = self.server.find(repo_id, revision)
        if found is None:
            self._answer(404, {"error": f"Invalid rev id: {revision}"}, body, code="RevisionNotFound")
        return found

    def _answer(self, status: int, payload, body: bool, code: str | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if code:
            self.send_header("X-Error-Code", code)
            self.send_header("X-Error-Message", payload["error"])
        self.end_headers()
        if body:
            self.wfile.write(data)


@contextmanager
def serving() -> Iterator[DownloadHub]:
    server = DownloadHub()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


class UploadHub(ThreadingHTTPServer):
    """The Hub's repo-create, branch, preupload and commit endpoints. `refuse` answers every request with that
    status instead; `fail_commits_from` answers 503 to that commit (1 for the first) and every later one, and
    `fail_commits` to that many commits from then on (None: all). `requests` records (method, path, headers, body)
    of each request, in order."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _UploadHandler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self.refuse: int | None = None
        self.fail_commits_from: int | None = None
        self.fail_commits: int | None = None
        self.failed_bodies: list[bytes] = []  # the commits answered 503
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []

    def posted(self, kind: str) -> list[tuple[str, dict[str, str], bytes]]:
        """(path, headers with lower-case names, body) of the POSTs whose path has `kind` (repos/create, branch,
        preupload, commit)."""
        return [(path, headers, body) for method, path, headers, body in self.requests
                if method == "POST" and f"/{kind}" in path]

    def commits(self) -> list[tuple[dict, dict[str, bytes]]]:
        """Each commit the Hub accepted: its header and its files (path -> bytes), in order."""
        return [read_commit(body) for _, _, body in self.posted("commit") if body not in self.failed_bodies]

    def _fails(self, body: bytes) -> bool:
        number = len(self.posted("commit"))  # this commit's number, counting the refused ones
        if self.fail_commits_from is None or number < self.fail_commits_from:
            return False
        if self.fail_commits is not None and len(self.failed_bodies) >= self.fail_commits:
            return False
        self.failed_bodies.append(body)
        return True


def read_commit(body: bytes) -> tuple[dict, dict[str, bytes]]:
    """A commit's header and its files (path -> bytes), from the NDJSON body huggingface_hub posts."""
    lines = [json.loads(line) for line in body.splitlines()]
    assert lines[0]["key"] == "header" and {line["key"] for line in lines[1:]} <= {"file"}
    assert all(line["value"]["encoding"] == "base64" for line in lines[1:])
    return lines[0]["value"], {line["value"]["path"]: base64.b64decode(line["value"]["content"]) for line in lines[1:]}


class _UploadHandler(BaseHTTPRequestHandler):
    server: UploadHub

    def log_message(self, format, *args) -> None:  # quiet: no line per request on stderr
        pass

    def do_GET(self) -> None:
        self.server.requests.append(("GET", self.path, _lower(self.headers), b""))
        self._answer(self.server.refuse or 404, {"error": "not in this fake Hub"})

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.requests.append(("POST", self.path, _lower(self.headers), body))
        if self.server.refuse:
            self._answer(self.server.refuse, {"error": "Invalid username or password."})
            return
        path = self.path.split("?")[0]
        if path == "/api/repos/create":
            payload = json.loads(body)
            repo = f"{payload['organization']}/{payload['name']}"
            self._answer(200, {"url": f"{self.server.url}/{repo}", "name": repo, "id": "1"})
        elif path == "/api/validate-yaml":  # upload_folder checks the model card's metadata first
            self._answer(200, {"errors": [], "warnings": []})
        elif re.fullmatch(r"/api/models/[^/]+/[^/]+/branch/[^/]+", path):
            self._answer(200, {})
        elif re.fullmatch(r"/api/models/[^/]+/[^/]+/preupload/[^/]+", path):
            files = json.loads(body)["files"]
            self._answer(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                         for f in files]})
        elif match := re.fullmatch(r"/api/models/([^/]+/[^/]+)/commit/[^/]+", path):
            if self.server._fails(body):
                self._answer(503, {"error": "Service Unavailable"})
                return
            oid = f"{len(self.server.posted('commit')) - len(self.server.failed_bodies):040x}"
            self._answer(200, {"commitUrl": f"{self.server.url}/{match[1]}/commit/{oid}", "commitOid": oid,
                               "pullRequestUrl": None})
        else:
            self._answer(404, {"error": f"not in this fake Hub: {path}"})

    def _answer(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def _lower(headers) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


@contextmanager
def uploading() -> Iterator[UploadHub]:
    server = UploadHub()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
