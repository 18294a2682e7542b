"""The one cache folder catalens writes to: $CATALENS_CACHE, else ~/.cache/catalens. It holds downloaded images,
Fashion-MNIST, BSON indexes of read-only dumps, ONNX exports of run directories (never written into a run
directory by loading it) and of the frozen feature extractors that training runs (models/features.py)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    return Path(os.environ.get("CATALENS_CACHE") or Path.home() / ".cache" / "catalens")


def writable_cache_file(folder: str, name: str) -> Path:
    """cache_root()/folder/name when that folder can be written, else a file in a new temporary folder (a
    read-only home must not stop a command that only wanted to save time)."""
    import tempfile

    path = cache_root() / folder / name
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if os.access(path.parent, os.W_OK):
            return path
    except OSError:
        pass
    return Path(tempfile.mkdtemp(prefix="catalens-")) / name
