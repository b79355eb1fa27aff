"""A fake Hugging Face Hub on 127.0.0.1 that serves model repos for download (the calls huggingface_hub makes for
`snapshot_download`: the revision's info, the recursive file tree, and each file's HEAD and GET by commit).

`tests/e2e/test_export_push.py` has the upload side (repo create, preupload, commit); this is the download side.
Every request is recorded as (method, path) in `requests`; `down = True` answers every request 503.
"""

from __future__ import annotations

import hashlib
import json
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
