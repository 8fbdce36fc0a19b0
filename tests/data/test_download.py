"""download_cifar10 against a real HTTP server on 127.0.0.1 serving small archives.

The archives are built here in the official layout (``cifar-10-batches-py/``
with pickled batches of 10 rows). The hostile one holds a pickle that creates
a marker file when unpickled and a member that would land outside the target.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import socket
import tarfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from sweep.data.datasets import CIFAR10_MD5, DatasetError, download_cifar10, load_dataset

BATCHES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


class _MakesMarker:
    """Unpickling this calls open(path, 'w'): proof that code would have run."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return open, (str(self.path), "w")


def build_archive(
    rows: int = 10, *, poison: Path | None = None, escape: bool = False, drop: str | None = None
) -> tuple[bytes, np.ndarray]:
    """A ``cifar-10-python.tar.gz`` in memory; returns it and the test labels.

    Args:
        rows: Rows per batch.
        poison: data_batch_1 becomes a pickle that creates this file when loaded.
        escape: Add a member ``../escaped.txt`` (outside the extraction folder).
        drop: Leave this batch out.
    """
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    y_test = np.zeros(0)
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        def add(name: str, content: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))

        for name in BATCHES:
            labels = rng.integers(0, 10, rows)
            batch: dict[bytes, object] = {b"data": rng.integers(0, 256, (rows, 3072), dtype=np.uint8),
                                          b"labels": labels.tolist()}
            if name == "data_batch_1" and poison is not None:
                batch[b"data"] = _MakesMarker(poison)
            y_test = labels
            if name != drop:
                add(f"cifar-10-batches-py/{name}", pickle.dumps(batch, protocol=2))
        add("cifar-10-batches-py/batches.meta", pickle.dumps({b"label_names": [b"x"] * 10}, protocol=2))
        if escape:
            add("../escaped.txt", b"outside")
    return buf.getvalue(), y_test


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        self.server.hits.append(self.path)
        if self.path not in self.server.routes:
            self.send_error(404)
            return
        body, cut = self.server.routes[self.path]
        self.send_response(200)
        self.send_header("Content-Type", "application/gzip")
        self.send_header("Content-Length", str(len(body)))  # the full size, even when we cut
        self.end_headers()
        self.wfile.write(body if cut is None else body[:cut])
        self.wfile.flush()
        self.close_connection = True  # HTTP/1.0: the socket closes after this reply

    def log_message(self, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    routes: dict[str, tuple[bytes, int | None]]
    hits: list[str]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server(("127.0.0.1", 0), _Handler)
    srv.routes, srv.hits = {}, []
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=5)


def serve(server: _Server, archive: bytes, cut: int | None = None) -> str:
    server.routes["/cifar-10-python.tar.gz"] = (archive, cut)
    return server.url("/cifar-10-python.tar.gz")


def left_in(folder: Path) -> list[str]:
    """Everything under ``folder`` (the download's parent), hidden temp files included."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


def test_download_verifies_extracts_in_place_and_loads(server: _Server, tmp_path: Path) -> None:
    archive, y_test = build_archive()
    url = serve(server, archive)
    data = tmp_path / "data"
    dest = download_cifar10(data, url, md5=hashlib.md5(archive).hexdigest(), progress=False)
    assert dest == data / "cifar-10-batches-py"
    assert left_in(data) == ["cifar-10-batches-py", *sorted(
        f"cifar-10-batches-py/{n}" for n in [*BATCHES, "batches.meta"]
    )], "no temp file or folder left beside the data"
    d = load_dataset("cifar10", data, num_train=40, num_val=10, num_test=10, cache_dir=tmp_path / "cache")
    assert np.array_equal(d["y_test"], y_test)
    assert download_cifar10(data, url, md5=hashlib.md5(archive).hexdigest()) == dest
    assert server.hits == ["/cifar-10-python.tar.gz"], "a complete folder is not fetched again"


def test_checksum_mismatch_is_refused_before_extracting_or_unpickling(server: _Server, tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    archive, _ = build_archive(poison=marker, escape=True)
    # The poison is live: a plain unpickle of that batch creates the marker.
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        member = tar.extractfile("cifar-10-batches-py/data_batch_1")
        assert member is not None
        pickle.loads(member.read())
    assert marker.exists()
    marker.unlink()

    data = tmp_path / "data"
    got = hashlib.md5(archive).hexdigest()
    with pytest.raises(DatasetError) as err:
        download_cifar10(data, serve(server, archive), progress=False)
    # Had the archive been opened first, its ../escaped.txt member would have
    # raised the unsafe-member error instead.
    assert str(err.value).startswith(f"checksum mismatch for {server.url('/cifar-10-python.tar.gz')}")
    assert f"expected MD5 {CIFAR10_MD5}, got {got}" in str(err.value)
    assert "deleted" in str(err.value)
    assert left_in(data) == [], "the download is deleted"
    assert not marker.exists() and not (tmp_path / "escaped.txt").exists()


def test_load_dataset_download_uses_the_env_url_and_the_official_checksum(
    server: _Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "unpickled"
    archive, _ = build_archive(poison=marker)
    monkeypatch.setenv("SWEEP_CIFAR10_URL", serve(server, archive))
    with pytest.raises(DatasetError, match=f"checksum mismatch.*expected MD5 {CIFAR10_MD5}"):
        load_dataset("cifar10", tmp_path / "data", num_train=40, num_val=10, num_test=10,
                     download=True, cache_dir=tmp_path / "cache")
    assert server.hits == ["/cifar-10-python.tar.gz"]
    assert left_in(tmp_path / "data") == [] and not marker.exists()


def test_connection_dropped_mid_transfer_leaves_nothing(server: _Server, tmp_path: Path) -> None:
    archive, _ = build_archive(rows=200)  # ~1 MB, so the cut lands mid-stream
    cut = len(archive) // 2
    data = tmp_path / "data"
    with pytest.raises(DatasetError, match=f"connection closed after {cut} of {len(archive)} bytes"):
        download_cifar10(data, serve(server, archive, cut=cut), md5=hashlib.md5(archive).hexdigest(), progress=False)
    assert left_in(data) == []


def test_unsafe_member_is_refused_even_with_a_matching_checksum(server: _Server, tmp_path: Path) -> None:
    archive, _ = build_archive(escape=True)
    data = tmp_path / "sub" / "data"
    with pytest.raises(DatasetError, match="refusing unsafe member"):
        download_cifar10(data, serve(server, archive), md5=hashlib.md5(archive).hexdigest(), progress=False)
    assert left_in(data) == []
    assert not (tmp_path / "sub" / "escaped.txt").exists()


def test_archive_without_a_batch_is_refused(server: _Server, tmp_path: Path) -> None:
    archive, _ = build_archive(drop="test_batch")
    data = tmp_path / "data"
    with pytest.raises(DatasetError, match="has no cifar-10-batches-py/test_batch"):
        download_cifar10(data, serve(server, archive), md5=hashlib.md5(archive).hexdigest(), progress=False)
    assert left_in(data) == []


def test_http_error_explains_how_to_get_the_data(server: _Server, tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as err:
        download_cifar10(tmp_path / "data", server.url("/nothing-here.tar.gz"), progress=False)
    msg = str(err.value)
    assert "could not download" in msg and "Not Found" in msg
    assert "sweep data download cifar10 --data-dir" in msg and "SWEEP_DATA_DIR" in msg
    assert left_in(tmp_path / "data") == []


def test_unreachable_server_explains_how_to_get_the_data(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port that nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DatasetError, match=r"could not download.*sweep data download cifar10"):
        download_cifar10(tmp_path / "data", f"http://127.0.0.1:{port}/x.tar.gz", progress=False)
    assert left_in(tmp_path / "data") == []


def test_progress_bar_goes_to_stderr(server: _Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    archive, _ = build_archive()
    download_cifar10(tmp_path / "data", serve(server, archive), md5=hashlib.md5(archive).hexdigest())
    out, err = capsys.readouterr()
    assert out == "" and "cifar-10-python.tar.gz" in err


def test_file_url_imports_an_archive_fetched_elsewhere(tmp_path: Path) -> None:
    archive, _y_test = build_archive()
    path = tmp_path / "cifar-10-python.tar.gz"
    path.write_bytes(archive)
    dest = download_cifar10(tmp_path / "data", path.as_uri(), md5=hashlib.md5(archive).hexdigest(), progress=False)
    assert (dest / "test_batch").is_file() and path.exists()


def test_two_downloads_at_once_end_with_one_complete_folder(server: _Server, tmp_path: Path) -> None:
    archive, _ = build_archive()
    url, md5 = serve(server, archive), hashlib.md5(archive).hexdigest()
    errors: list[BaseException] = []

    def fetch() -> None:
        try:
            download_cifar10(tmp_path / "data", url, md5=md5, progress=False)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=fetch) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert errors == []
    assert [p for p in left_in(tmp_path / "data") if "/" not in p] == ["cifar-10-batches-py"]


def test_incomplete_folder_in_place_is_reported_not_overwritten(server: _Server, tmp_path: Path) -> None:
    folder = tmp_path / "data" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    (folder / "data_batch_1").write_bytes(b"mine")
    archive, _ = build_archive()
    with pytest.raises(DatasetError, match="exists but lacks data_batch_2"):
        download_cifar10(tmp_path / "data", serve(server, archive), md5=hashlib.md5(archive).hexdigest())
    assert server.hits == [] and (folder / "data_batch_1").read_bytes() == b"mine"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"url": "ftp://example.invalid/x.tar.gz"}, "url"), ({"md5": "abc"}, "md5"), ({"md5": "z" * 32}, "md5")],
)
def test_malformed_url_or_md5_names_the_argument(kwargs: dict[str, str], field: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=f"^{field} must be"):
        download_cifar10(tmp_path / "data", **kwargs)
