"""sha256 of a file's bytes, read in 1 MB blocks (weights files, duplicate images)."""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_digest(path: Path | str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
