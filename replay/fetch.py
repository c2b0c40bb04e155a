"""Download and unpack the official UCI archives into a data folder.

``fetch_dataset("hapt", dest, url)`` downloads to ``dest/downloads/NAME.part``, resumes
an interrupted download with an HTTP Range request, retries with backoff, checks the
archive's sha256 when one is known, and unpacks (nested zips included) so that
``dest/RawData`` (HAPT) or ``dest/UCI HAR Dataset`` (UCI HAR v1) exists.

Only the CLI calls this; no test or training run downloads anything.
"""

from __future__ import annotations

import hashlib
import http.client
import shutil
import sys
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

from replay.errors import DataError

__all__ = ["DATASETS", "Progress", "download", "extract", "fetch_dataset"]

#: dataset name -> the folder that marks a finished unpack, relative to dest
DATASETS = {"hapt": "RawData", "uci-har": "UCI HAR Dataset"}
_CHUNK = 1 << 16


class Progress:
    """A one-line progress bar on a stream; plain lines every 10% when not a TTY."""

    def __init__(self, name: str, stream: IO[str] | None = None) -> None:
        self.name = name
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty()
        self.started = time.monotonic()
        self.last_decile = -1

    def __call__(self, done: int, total: int | None) -> None:
        mb = done / 1e6
        rate = mb / max(time.monotonic() - self.started, 1e-3)
        if total:
            share = done / total
            text = f"{self.name}: {share:6.1%} {mb:7.1f}/{total / 1e6:.1f} MB {rate:5.1f} MB/s"
        else:
            share, text = 0.0, f"{self.name}: {mb:7.1f} MB {rate:5.1f} MB/s"
        if self.tty:
            self.stream.write("\r" + text)
            if total and done >= total:
                self.stream.write("\n")
        elif total and int(share * 10) > self.last_decile:
            self.last_decile = int(share * 10)
            self.stream.write(text + "\n")
        self.stream.flush()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fetch_once(
    url: str, part: Path, timeout_s: float, progress: Callable[[int, int | None], None]
) -> None:
    """Append to ``part`` from where it stops; raises OSError-family errors on a cut."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "harstream-fetch"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout_s)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing left to send: the part is complete
            return
        raise
    with response:
        if have and response.status != 206:
            have = 0  # the server ignored the Range header: start over
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        with part.open("ab" if have else "wb") as out:
            done = have
            while block := response.read(_CHUNK):
                out.write(block)
                done += len(block)
                progress(done, total)
        if total is not None and done < total:
            raise http.client.IncompleteRead(b"", total - done)


def download(
    url: str,
    target: Path,
    *,
    sha256: str | None = None,
    retries: int = 5,
    timeout_s: float = 30.0,
    backoff_s: float = 1.0,
    progress: Callable[[int, int | None], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Path:
    """Download ``url`` to ``target``, resuming and retrying; verify ``sha256`` if given."""
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    report = progress or (lambda done, total: None)
    for attempt in range(retries + 1):
        try:
            _fetch_once(url, part, timeout_s, report)
            break
        except urllib.error.HTTPError as exc:
            if exc.code < 500 or attempt == retries:
                raise DataError(f"{url}: HTTP {exc.code} {exc.reason}") from exc
        except (OSError, http.client.HTTPException) as exc:
            if attempt == retries:
                raise DataError(
                    f"{url}: download failed after {retries + 1} attempts: {exc!r}"
                ) from exc
        sleep(backoff_s * 2**attempt)
    if sha256 is not None:
        actual = _sha256(part)
        if actual != sha256.lower():
            part.unlink()
            raise DataError(
                f"{url}: checksum mismatch: expected sha256 {sha256}, got {actual} "
                "(download removed)"
            )
    part.replace(target)
    return target


def extract(archive: Path, into: Path) -> None:
    """Unzip ``archive`` into ``into``, then any zip found inside, refusing unsafe paths."""
    into.mkdir(parents=True, exist_ok=True)
    try:
        with zipfile.ZipFile(archive) as zf:
            for member in zf.namelist():
                target = (into / member).resolve()
                if not target.is_relative_to(into.resolve()):
                    raise DataError(f"{archive}: unsafe path in archive: {member}")
            zf.extractall(into)
    except zipfile.BadZipFile as exc:
        raise DataError(f"{archive}: not a zip archive ({exc})") from exc
    for nested in sorted(into.rglob("*.zip")):
        if "__MACOSX" not in nested.parts:
            extract(nested, nested.parent)
            nested.unlink()


def _find(root: Path, dataset: str) -> Path:
    if dataset == "hapt":
        hits = [p.parent.parent for p in root.rglob("RawData/labels.txt")]
    else:
        hits = [p for p in root.rglob("UCI HAR Dataset") if (p / "train").is_dir()]
    hits = [p for p in hits if "__MACOSX" not in p.parts]
    if not hits:
        raise DataError(f"archive for {dataset} holds no {DATASETS[dataset]}/ folder")
    return hits[0]


def fetch_dataset(
    dataset: str,
    dest: Path,
    url: str,
    *,
    sha256: str | None = None,
    progress: Callable[[int, int | None], None] | None = None,
    retries: int = 5,
) -> Path:
    """Download and unpack one dataset into ``dest``; return the folder to pass as --data-dir."""
    if dataset not in DATASETS:
        raise DataError(f"unknown dataset {dataset!r}; choose from {sorted(DATASETS)}")
    dest.mkdir(parents=True, exist_ok=True)
    if (dest / DATASETS[dataset]).is_dir():
        return dest
    archive = download(
        url,
        dest / "downloads" / f"{dataset}.zip",
        sha256=sha256,
        progress=progress,
        retries=retries,
    )
    staging = dest / f".extract-{dataset}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        extract(archive, staging)
        found = _find(staging, dataset)
        if dataset == "hapt":
            for child in found.iterdir():
                if not (dest / child.name).exists():
                    child.rename(dest / child.name)
        else:
            found.rename(dest / DATASETS[dataset])
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest
