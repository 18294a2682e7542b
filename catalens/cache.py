"""The one cache folder catalens writes to: $CATALENS_CACHE, else ~/.cache/catalens. It holds downloaded images,
Fashion-MNIST, BSON indexes of read-only dumps and ONNX exports of run directories (never written into a run
directory by loading it)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    return Path(os.environ.get("CATALENS_CACHE") or Path.home() / ".cache" / "catalens")
