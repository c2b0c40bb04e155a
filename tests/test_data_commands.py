"""`harstream data verify` and `harstream data fetch`, end to end (fetch against a local
HTTP server on 127.0.0.1 serving a fixture zip)."""

from __future__ import annotations

import hashlib
import http.server
import io
import shutil
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from harstream.cli import main
from replay import DataError
from replay.fetch import download
from replay.verify import verify_data

DATA = Path(__file__).resolve().parent / "data"


def test_verify_passes_on_the_full_hapt_data(hapt_dir: Path, capsys) -> None:
    assert main(["data", "verify", str(hapt_dir)]) == 0
    out = capsys.readouterr().out
    assert "verdict: OK" in out and "every RawData file matches the published sha256" in out
    assert "1122772" in out  # total samples, as the data README states


def test_verify_reports_every_problem_and_exits_1(tmp_path: Path, capsys) -> None:
    root = Path(shutil.copytree(DATA / "hapt-mini", tmp_path / "hapt"))
    raw = root / "RawData"
    (raw / "acc_exp01_user01.txt").write_text("1 2 3\n")  # row count no longer matches gyro
    with (raw / "labels.txt").open("a") as f:
        f.write("17 9 2 4100 4500\n")  # past the end of experiment 17 (4200 rows)
    assert main(["data", "verify", str(root)]) == 1
    out = capsys.readouterr().out
    assert "gyro_exp01_user01.txt: 3700 rows, but acc_exp01_user01.txt has 1" in out
    assert "past the end of experiment 17 (4200 rows)" in out
    assert "subject(s) missing: [2, 3, 4, 5" in out
    assert "differ from the published HAPT originals" in out  # the cut files are not originals
    assert "verdict: 4 problem(s)" in out


def test_verify_checks_a_uci_har_folder_too(tmp_path: Path) -> None:
    root = Path(shutil.copytree(DATA / "uci-har-mini", tmp_path / "uci"))
    report = verify_data(root)
    assert report.ok, report.problems
    assert any("test: 37 windows, subjects [9]" in note for note in report.notes)
    (root / "UCI HAR Dataset" / "train" / "y_train.txt").write_text("1\n")
    report = verify_data(root)
    assert any("subject_train.txt: 39 rows, but y_train.txt has 1" in p for p in report.problems)


def test_verify_on_an_empty_folder_fails(tmp_path: Path, capsys) -> None:
    assert main(["data", "verify", str(tmp_path)]) == 1
    assert "neither HAPT RawData/ nor 'UCI HAR Dataset/' found" in capsys.readouterr().out


# --- fetch ------------------------------------------------------------------------------


def fixture_zip() -> bytes:
    """An archive shaped like UCI's: a folder holding RawData/ and activity_labels.txt."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted((DATA / "hapt-mini" / "RawData").iterdir()):
            zf.write(path, f"HAPT Data Set/RawData/{path.name}")
        zf.writestr("HAPT Data Set/activity_labels.txt", "1 WALKING\n")
    return buffer.getvalue()


class Server:
    """Serves one payload with Range support; can cut the first N responses short."""

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.cut_first = 0
        self.requests: list[str | None] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                rng = self.headers.get("Range")
                server.requests.append(rng)
                if self.path != "/hapt.zip":
                    self.send_error(404)
                    return
                start = int(rng.split("=")[1].rstrip("-")) if rng else 0
                body = server.payload[start:]
                self.send_response(206 if rng else 200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.cut_first > 0:
                    server.cut_first -= 1
                    self.wfile.write(body[: len(body) // 3])  # then hang up mid-body
                    self.close_connection = True
                    return
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hapt.zip"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server(fixture_zip())
    yield srv
    srv.close()


def test_fetch_downloads_unpacks_and_verifies(server: Server, tmp_path: Path, capsys) -> None:
    dest = tmp_path / "data"
    digest = hashlib.sha256(server.payload).hexdigest()
    code = main(
        [
            "data",
            "fetch",
            "--dest",
            str(dest),
            "--set",
            f"data.hapt_url={server.url}",
            "--set",
            f"data.hapt_sha256={digest}",
        ]
    )
    assert code == 0
    assert (dest / "RawData" / "labels.txt").read_bytes() == (
        DATA / "hapt-mini" / "RawData" / "labels.txt"
    ).read_bytes()
    assert (dest / "activity_labels.txt").exists()
    assert f"harstream data verify {dest}" in capsys.readouterr().out
    assert main(["data", "verify", "--no-checksums", str(dest)]) == 1  # mini: subjects missing


def test_fetch_resumes_a_truncated_download(server: Server, tmp_path: Path) -> None:
    server.cut_first = 2
    target = download(server.url, tmp_path / "hapt.zip", retries=3, sleep=lambda s: None)
    assert target.read_bytes() == server.payload
    assert server.requests[0] is None
    assert server.requests[1] is not None and server.requests[1].startswith("bytes=")
    assert len(server.requests) == 3  # two cut responses, then the rest in one piece


def test_fetch_gives_up_after_the_retries(server: Server, tmp_path: Path) -> None:
    server.cut_first = 10
    with pytest.raises(DataError, match="download failed after 3 attempts"):
        download(server.url, tmp_path / "hapt.zip", retries=2, sleep=lambda s: None)


def test_fetch_rejects_a_bad_checksum(server: Server, tmp_path: Path, capsys) -> None:
    dest = tmp_path / "data"
    code = main(
        [
            "data",
            "fetch",
            "--dest",
            str(dest),
            "--set",
            f"data.hapt_url={server.url}",
            "--set",
            "data.hapt_sha256=" + "0" * 64,
        ]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert "checksum mismatch: expected sha256 000" in err and "(download removed)" in err
    assert not (dest / "RawData").exists()
    assert not any((dest / "downloads").iterdir())


def test_fetch_does_not_retry_a_missing_file(server: Server, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="HTTP 404"):
        download(
            server.url.replace("hapt.zip", "nope.zip"),
            tmp_path / "x.zip",
            retries=3,
            sleep=lambda s: None,
        )
    assert len(server.requests) == 1
