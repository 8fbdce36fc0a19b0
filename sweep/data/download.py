"""Where CIFAR-10 lives on disk, and fetching the official archive safely.

The archive is streamed to a temporary file, its MD5 is checked before
anything is extracted or unpickled (unpickling an untrusted file runs code),
then it is extracted into a temporary folder with tarfile's ``data`` filter
and renamed into place. An interrupted or failed download leaves nothing
half-written: the temporary file and folder are removed in ``finally``.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zlib
from pathlib import Path
from typing import BinaryIO

from tqdm import tqdm

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_FOLDER = "cifar-10-batches-py"
# The files load_dataset reads; the archive also has batches.meta and readme.html.
CIFAR10_FILES = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch")

_CHUNK_BYTES = 1 << 20
_TIMEOUT_S = 60.0  # per blocking socket operation, not for the whole download
_URL_SCHEMES = ("http", "https", "file")  # file:// imports an archive fetched elsewhere

PathLike = str | os.PathLike[str]


class DatasetError(ValueError):
    """A dataset is missing, cannot be fetched, or its files are corrupt."""


def user_cache_root() -> Path:
    """The per-user cache folder of this project: ``$XDG_CACHE_HOME`` (else ``~/.cache``) / dropout-sweep."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "dropout-sweep"


def resolve_data_dir(data_dir: PathLike | None = None) -> Path:
    """The folder that holds (or will hold) ``cifar-10-batches-py``.

    Args:
        data_dir: Explicit folder; wins over everything else.

    Returns:
        ``data_dir``, else ``$SWEEP_DATA_DIR``, else ``user_cache_root()/data``.
    """
    if data_dir is not None and str(data_dir) != "":
        return Path(data_dir).expanduser()
    env = os.environ.get("SWEEP_DATA_DIR")
    if env:
        return Path(env).expanduser()
    return user_cache_root() / "data"


def missing_cifar10_files(folder: Path) -> list[str]:
    """Names from ``CIFAR10_FILES`` that are not regular files in ``folder``."""
    return [name for name in CIFAR10_FILES if not (folder / name).is_file()]


def how_to_get_cifar10() -> str:
    """The hint every 'CIFAR-10 is not there' error ends with."""
    return (
        "To get it, run "
        "`sweep data download cifar10 --data-dir DIR` where there is network (or add "
        "--url file:///path/to/cifar-10-python.tar.gz for an archive fetched elsewhere) and then "
        "pass --data-dir DIR or set SWEEP_DATA_DIR=DIR; or set SWEEP_DATA_DIR to a folder that "
        f"already holds {CIFAR10_FOLDER}/"
    )


def download_cifar10(
    data_dir: PathLike | None = None,
    url: str | None = None,
    *,
    md5: str = CIFAR10_MD5,
    progress: bool = True,
) -> Path:
    """Fetch, verify and unpack the official CIFAR-10 python archive.

    A no-op when ``<data_dir>/cifar-10-batches-py`` already holds every batch.
    Nothing is extracted or unpickled before the MD5 matches; members that
    would land outside the folder (or links, devices) are refused.

    Args:
        data_dir: Target folder; see ``resolve_data_dir``.
        url: Archive address (http, https or file); else ``$SWEEP_CIFAR10_URL``,
            else ``CIFAR10_URL``.
        md5: Expected hex MD5 of the archive.
        progress: Show a byte progress bar on stderr.

    Returns:
        The ``cifar-10-batches-py`` folder.

    Raises:
        DatasetError: Network failure, truncated transfer, checksum mismatch,
            corrupt or unsafe archive, or an incomplete folder already in place.
        ValueError: ``url`` or ``md5`` is malformed.

    Example:
        >>> folder = download_cifar10("~/data")  # doctest: +SKIP
    """
    root = resolve_data_dir(data_dir)
    dest = root / CIFAR10_FOLDER
    if not missing_cifar10_files(dest):
        return dest
    url = _resolve_url(url)
    md5 = _check_md5(md5)
    if dest.is_dir() and any(dest.iterdir()):
        # Never ours: we only ever rename a complete folder into place.
        raise DatasetError(
            f"{dest} exists but lacks {', '.join(missing_cifar10_files(dest))}; "
            "remove it (or complete it) and run the download again"
        )
    root.mkdir(parents=True, exist_ok=True)
    archive: Path | None = None
    staging: Path | None = None
    try:
        fd, name = tempfile.mkstemp(prefix=".cifar-10-python.", suffix=".tar.gz.part", dir=root)
        archive = Path(name)
        with os.fdopen(fd, "wb") as out:
            got = _fetch(url, out, dest, progress)
        if got != md5:
            raise DatasetError(
                f"checksum mismatch for {url}: expected MD5 {md5}, got {got}; "
                "the download was deleted and nothing was extracted"
            )
        staging = Path(tempfile.mkdtemp(prefix=".cifar-10-extract.", dir=root))
        _extract(archive, staging, url)
        _install(staging / CIFAR10_FOLDER, dest, url)
    finally:
        if archive is not None:
            archive.unlink(missing_ok=True)
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    return dest


def _resolve_url(url: str | None) -> str:
    url = url or os.environ.get("SWEEP_CIFAR10_URL") or CIFAR10_URL
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in _URL_SCHEMES:
        raise ValueError(f"url must be an {'/'.join(_URL_SCHEMES)} address, got {url!r}")
    return url


def _check_md5(md5: str) -> str:
    md5 = str(md5).strip().lower()
    if len(md5) != 32 or any(c not in "0123456789abcdef" for c in md5):
        raise ValueError(f"md5 must be 32 hex digits, got {md5!r}")
    return md5


def _fetch(url: str, out: BinaryIO, dest: Path, progress: bool) -> str:
    """Stream ``url`` into ``out``; return the hex MD5 of what was received."""
    digest = hashlib.md5(usedforsecurity=False)  # the published checksum is MD5
    received = 0
    try:
        with urllib.request.urlopen(url, timeout=_TIMEOUT_S) as resp:
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            with tqdm(
                total=total, unit="B", unit_scale=True, unit_divisor=1024,
                desc=Path(urllib.parse.urlsplit(url).path).name or "cifar-10",
                file=sys.stderr, disable=not progress, leave=False,
            ) as bar:
                while chunk := resp.read(_CHUNK_BYTES):
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        # URLError covers HTTP errors (404...), OSError resets, timeouts and a full
        # disk, HTTPException a malformed response or IncompleteRead.
        reason = getattr(exc, "reason", None) or repr(exc)
        raise DatasetError(
            f"could not download {url}: {reason}. CIFAR-10 belongs in {dest}/. {how_to_get_cifar10()}"
        ) from exc
    if total is not None and received != total:
        # http.client returns b"" rather than raising when the peer closes early.
        raise DatasetError(
            f"could not download {url}: connection closed after {received} of {total} bytes. "
            f"CIFAR-10 belongs in {dest}/. {how_to_get_cifar10()}"
        )
    return digest.hexdigest()


def _extract(archive: Path, staging: Path, url: str) -> None:
    if not hasattr(tarfile, "data_filter"):
        raise DatasetError("safe tar extraction needs Python >= 3.11.4 (tarfile data filter)")
    try:
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(staging, filter="data")
    except tarfile.FilterError as exc:
        raise DatasetError(f"refusing unsafe member in the archive from {url}: {exc}") from exc
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise DatasetError(f"the archive from {url} is corrupt: {exc}") from exc


def _install(src: Path, dest: Path, url: str) -> None:
    missing = missing_cifar10_files(src)
    if missing:
        raise DatasetError(f"the archive from {url} has no {CIFAR10_FOLDER}/{missing[0]}")
    try:
        # Atomic; replaces an empty dest, fails on a non-empty one.
        os.rename(src, dest)
    except OSError as exc:
        if not missing_cifar10_files(dest):
            return  # another process finished the same download first
        raise DatasetError(f"cannot move the extracted data to {dest}: {exc}") from exc
