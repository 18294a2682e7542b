"""What a dataset is, for the honesty of the scores measured on it: a folder that `catalens zoomed bootstrap`
wrote (it holds bootstrap.json) is generated data, and every score on it is labelled as such."""

from __future__ import annotations

from pathlib import Path

BOOTSTRAP_FILE = "bootstrap.json"
REAL = "as given (real data unless the source says otherwise)"


def provenance(data: str) -> str | None:
    """A warning label for scores measured on a bootstrapped dataset (None for other data)."""
    if data and Path(data).is_dir() and (Path(data) / BOOTSTRAP_FILE).is_file():
        return ("bootstrapped data: the zoomed images are generated crops of normal photos (`catalens zoomed "
                "bootstrap`), not real close-ups; a score here says little about real catalog photos")
    return None
