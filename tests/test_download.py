"""Fashion-MNIST download over real HTTP from a local server, checksums checked; a clear error offline."""

import functools
import http.server
import threading

import pytest
from conftest import shared

from catalens import CatalensError
from catalens.data.sources import idx, open_source


@pytest.fixture
def no_local_copies(tmp_path, monkeypatch):
    monkeypatch.delenv("CATALENS_DATA", raising=False)
    monkeypatch.setenv("CATALENS_CACHE", str(tmp_path / "cache" / "catalens"))
    monkeypatch.setattr(idx, "DEBIAN_DIR", tmp_path / "no-debian-package")
    return tmp_path


def serve(folder):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.mark.integration
def test_downloads_verifies_and_caches(no_local_copies, monkeypatch):
    server = serve(shared("fashion-mnist"))
    try:
        monkeypatch.setattr(idx, "FASHION_MNIST_URL", f"http://127.0.0.1:{server.server_address[1]}/")
        catalog = open_source("fashion-mnist")
    finally:
        server.shutdown()
    assert len(catalog) == 70_000
    cached = no_local_copies / "cache" / "catalens" / "fashion-mnist"
    assert sorted(p.name for p in cached.iterdir()) == sorted(f"{stem}.gz" for stem in idx.FASHION_MNIST_SHA256)
    # now found in the cache: no server needed
    monkeypatch.setattr(idx, "FASHION_MNIST_URL", "http://127.0.0.1:9/")
    assert len(open_source("fashion-mnist")) == 70_000


def test_corrupted_download_is_refused(no_local_copies, monkeypatch, tmp_path):
    bad = tmp_path / "mirror"
    bad.mkdir()
    import gzip

    for stem in idx.FASHION_MNIST_SHA256:
        (bad / f"{stem}.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x01\x07"))
    server = serve(bad)
    try:
        monkeypatch.setattr(idx, "FASHION_MNIST_URL", f"http://127.0.0.1:{server.server_address[1]}/")
        with pytest.raises(CatalensError, match="does not match its checksum"):
            open_source("fashion-mnist")
    finally:
        server.shutdown()


def test_offline_gives_a_clear_error(no_local_copies, monkeypatch):
    monkeypatch.setattr(idx, "FASHION_MNIST_URL", "http://127.0.0.1:9/")  # nothing listens on the discard port
    with pytest.raises(CatalensError, match="apt-get install dataset-fashion-mnist"):
        open_source("fashion-mnist")
