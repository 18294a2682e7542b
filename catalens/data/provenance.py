"""What a dataset is, for the honesty of the scores measured on it: a folder that `catalens zoomed bootstrap`
wrote (it holds bootstrap.json) is generated data, and every score on it is labelled as such."""

from __future__ import annotations

import json
from pathlib import Path

BOOTSTRAP_FILE = "bootstrap.json"
REAL = "as given (real data unless the source says otherwise)"


def provenance(data: str) -> str | None:
    """A warning label for scores measured on a bootstrapped dataset (None for other data)."""
    if data and Path(data).is_dir() and (Path(data) / BOOTSTRAP_FILE).is_file():
        return ("bootstrapped data: the zoomed images are generated crops of normal photos (`catalens zoomed "
                "bootstrap`), not real close-ups; a score here says little about real catalog photos")
    return None


def bootstrap_geometry(data: str | None) -> str | None:
    """The resize a `zoomed bootstrap` dataset was made for ("pad": the filter must see the whole photo), or
    None (not a bootstrapped dataset, or one made before catalens recorded it)."""
    path = Path(data) / BOOTSTRAP_FILE if data and Path(data).is_dir() else None
    if path is None or not path.is_file():
        return None
    try:
        return json.loads(path.read_text()).get("resize")
    except (OSError, ValueError):
        return None
