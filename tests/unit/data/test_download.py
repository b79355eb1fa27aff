"""`mtbert data download` against a local HTTP server on 127.0.0.1 serving fixture files.

Covers the pinned check (size and SHA-256), a truncated answer, a checksum mismatch, an unpinned file that is not a
task file, a missing optional file, no network, idempotence, and that nothing partial is ever left behind.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from mtbert.data.download import CS224N_FILES, DataFile, download, is_present
from mtbert.errors import DataError

SST_DEV = (b"\tid\tsentence\tsentiment\n0\tb7573736a6ddf7be102b7fee0\tgood , fun .\t4\n"
           b"1\td17a8752e342834fd18b31aaa\tdull\t1\n")
STS_TRAIN = b"\tid\tsentence1\tsentence2\tsimilarity\n0\tfbfddc56315fb8a39e7608fa0\ta\tb\t3.8\n"


def pin(name: str, body: bytes) -> DataFile:
    return DataFile(name, len(body), hashlib.sha256(body).hexdigest())


class Server:
    """Serves `files` (name -> bytes); `truncate` names are sent with a Content-Length 100 bytes too large."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.truncate: set[str] = set()
        self.requests: list[str] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                name = self.path.rsplit("/", 1)[-1]
                owner.requests.append(name)
                body = owner.files.get(name)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body) + (100 if name in owner.truncate else 0)))
                self.end_headers()
                self.wfile.write(body)
                self.close_connection = True

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/data/"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture()
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


def test_downloads_check_and_write_atomically_then_keep(server, tmp_path):
    server.files = {"ids-sst-dev.csv": SST_DEV.replace(b"\n", b"\r\n"), "sts-train.csv": STS_TRAIN}
    files = (pin("ids-sst-dev.csv", SST_DEV), DataFile("sts-train.csv"), DataFile("quora-test-student.csv",
                                                                                 required=False))
    old = os.umask(0o022)
    try:
        report = download(tmp_path / "d", server.url, files)
    finally:
        os.umask(old)
    assert report == [("ids-sst-dev.csv", "downloaded, size and SHA-256 match"),
                      ("sts-train.csv", "downloaded, reads as a task file (not pinned)"),
                      ("quora-test-student.csv", "not on the server, skipped (optional)")]
    assert (tmp_path / "d" / "ids-sst-dev.csv").read_bytes() == SST_DEV  # \r\n made \n, then checked
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["ids-sst-dev.csv", "sts-train.csv"]
    assert stat.S_IMODE((tmp_path / "d" / "sts-train.csv").stat().st_mode) == 0o644
    server.requests.clear()
    again = download(tmp_path / "d", server.url, files)
    assert again[:2] == [("ids-sst-dev.csv", "verified, kept"), ("sts-train.csv", "verified, kept")]
    assert server.requests == ["quora-test-student.csv"]  # verified files are not fetched again
    # a damaged copy is fetched again and replaced
    (tmp_path / "d" / "ids-sst-dev.csv").write_bytes(SST_DEV[:-5])
    assert download(tmp_path / "d", server.url, files)[0] == ("ids-sst-dev.csv", "downloaded, size and SHA-256 match")
    assert (tmp_path / "d" / "ids-sst-dev.csv").read_bytes() == SST_DEV


def assert_nothing_left(folder: Path, *kept: str) -> None:
    assert sorted(p.name for p in folder.iterdir()) == sorted(kept)


def test_a_truncated_file_leaves_nothing(server, tmp_path):
    server.files = {"ids-sst-dev.csv": SST_DEV}
    server.truncate = {"ids-sst-dev.csv"}
    with pytest.raises(DataError, match=rf"^{re.escape(server.url)}ids-sst-dev.csv: truncated download "
                                        rf"\({len(SST_DEV)} of {len(SST_DEV) + 100} bytes\)$"):
        download(tmp_path, server.url, (DataFile("ids-sst-dev.csv"),))
    assert_nothing_left(tmp_path)


def test_a_short_or_changed_file_fails_its_pin_and_leaves_nothing(server, tmp_path):
    server.files = {"ids-sst-dev.csv": SST_DEV[:-3], "sts-dev.csv": SST_DEV.replace(b"dull", b"DULL")}
    with pytest.raises(DataError, match=rf"ids-sst-dev.csv: {len(SST_DEV) - 3} bytes where ids-sst-dev.csv has "
                                        rf"{len(SST_DEV)}; the file is truncated or not the course's$"):
        download(tmp_path, server.url, (pin("ids-sst-dev.csv", SST_DEV),))
    with pytest.raises(DataError, match=r"sts-dev.csv: SHA-256 [0-9a-f]{64} does not match the pinned [0-9a-f]{64} "
                                        r"of sts-dev.csv$"):
        download(tmp_path, server.url, (pin("sts-dev.csv", SST_DEV),))
    assert_nothing_left(tmp_path)


def test_an_unpinned_file_must_read_as_its_task_file(server, tmp_path):
    server.files = {"sts-train.csv": b"<html>rate limited</html>\n"}
    with pytest.raises(DataError, match=r"sts-train.csv: not a usable sts file \(line 1: missing column 'id'"):
        download(tmp_path, server.url, (DataFile("sts-train.csv"),))
    assert_nothing_left(tmp_path)


def test_http_errors_and_no_network_are_one_sentence(server, tmp_path):
    with pytest.raises(DataError, match=r"ids-sst-dev.csv: HTTP 404 Not Found$"):
        download(tmp_path, server.url, (DataFile("ids-sst-dev.csv"),))
    closed = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = closed.server_address[1]
    closed.server_close()  # nothing listens there now
    with pytest.raises(DataError, match=r"^cannot fetch the CS224N data from http://127.0.0.1:\d+/ \(.+\); provide "
                                        r"it one of two ways: set MTBERT_DATA to a folder that holds the course "
                                        r"files, or run `mtbert data download --to DIR` on a machine with a network "
                                        r"and copy DIR here$"):
        download(tmp_path / "x", f"http://127.0.0.1:{port}/", (DataFile("ids-sst-dev.csv"),), timeout=5)


def test_if_missing_fetches_nothing_when_the_files_are_there(server, tmp_path):
    (tmp_path / "ids-sst-dev.csv").write_bytes(b"anything")
    assert download(tmp_path, server.url, (DataFile("ids-sst-dev.csv"),), if_missing=True) == [
        ("ids-sst-dev.csv", "present")]
    assert server.requests == []


def real_data() -> Path | None:
    folder = Path(os.environ.get("MTBERT_DATA", "../shared/data/cs224n"))
    return folder if (folder / "sts-dev.csv").is_file() else None


@pytest.mark.skipif(real_data() is None, reason="needs the CS224N files (MTBERT_DATA)")
def test_the_pins_match_the_course_files_and_the_cli_fetches_them(server, tmp_path, capsys):
    from mtbert.cli import main

    folder = real_data()
    assert all(is_present(f, folder / f.name) for f in CS224N_FILES if f.pinned)
    server.files = {f.name: (folder / f.name).read_bytes().replace(b"\n", b"\r\n") for f in CS224N_FILES
                    if (folder / f.name).is_file()}
    assert main(["data", "download", "--to", str(tmp_path / "data"), "--url", server.url]) == 0
    out = capsys.readouterr().out
    assert "sts-dev.csv: downloaded, size and SHA-256 match" in out
    assert "quora-test-student.csv: not on the server, skipped (optional)" in out
    for name in server.files:
        assert (tmp_path / "data" / name).read_bytes() == (folder / name).read_bytes()
    assert main(["data", "download", "--to", str(tmp_path / "data"), "--url", server.url + "nope/",
                 "--if_missing"]) == 0
    del server.files["sts-dev.csv"]
    (tmp_path / "data" / "sts-dev.csv").unlink()
    assert main(["data", "download", "--to", str(tmp_path / "data"), "--url", server.url, "--if_missing"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "sts-dev.csv: HTTP 404" in err
