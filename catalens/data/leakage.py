"""Leakage between training and evaluation images: evaluation images that are byte-identical to a training image
(exact), or near duplicates of one (perceptual hashes within a Hamming distance; identity.py's multi-index search).
A model scored on images it has seen, or almost seen, scores too well; `evaluate` warns with the counts and
report.md shows them with examples.

What counts as the same image (exact key, perceptual hash, which images are too small for it) is identity.py's."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from catalens.data.catalog import Catalog
from catalens.data.identity import MIN_SIDE, identify, near_pairs

MAX_ITEMS = 100_000  # beyond this (training + evaluation images) the check is skipped, and says so: it decodes
# every image (clothing-small, 3,409 photos: 10 s; Fashion-MNIST, 63,330 arrays: 14 s on 2 cores)
NEAR_DISTANCE = 4  # bits of 64: re-encoded, resized or lightly edited copies, not merely similar products


@dataclass
class Overlap:
    checked: bool
    note: str = ""
    training_images: int = 0
    evaluated_images: int = 0
    exact: int = 0  # evaluation images byte-identical to a training image
    near: int = 0  # further evaluation images within NEAR_DISTANCE bits of a training image
    max_distance: int = NEAR_DISTANCE
    examples: list[dict] = field(default_factory=list)  # {evaluated, training, kind}

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def leaked(self) -> int:
        return self.exact + self.near


def training_overlap(evaluated: Catalog, training: Catalog, max_distance: int = NEAR_DISTANCE,
                     examples: int = 10) -> Overlap:
    """How many of `evaluated`'s images are copies or near copies of `training`'s."""
    total = len(evaluated) + len(training)
    if total > MAX_ITEMS:
        return Overlap(False, f"not checked: {total:,} images is over the limit of {MAX_ITEMS:,}")
    if not len(training) or not len(evaluated):
        return Overlap(False, "not checked: no training images to compare with")
    evaluated_ids, training_ids = identify(evaluated), identify(training)
    eval_exact, eval_hash, eval_valid = evaluated_ids.exact, evaluated_ids.phash, evaluated_ids.searchable
    train_exact, train_hash, train_valid = training_ids.exact, training_ids.phash, training_ids.searchable
    train_by_key = {key: row for row, key in enumerate(train_exact) if key}
    exact_rows = {row: train_by_key[key] for row, key in enumerate(eval_exact) if key and key in train_by_key}
    n = len(eval_hash)
    rows = np.r_[np.flatnonzero(eval_valid), n + np.flatnonzero(train_valid)]
    pairs = near_pairs(np.r_[eval_hash, train_hash][rows], max_distance)
    pairs = rows[pairs] if len(pairs) else pairs
    near_rows: dict[int, int] = {}
    for a, b in pairs:  # i < j, so an evaluation row (< n) is always first
        if a < n <= b and a not in exact_rows:
            near_rows.setdefault(int(a), int(b - n))
    unhashed = int((~eval_valid).sum())
    note = (f"near duplicates not searched for {unhashed:,} evaluation images (unreadable, or under {MIN_SIDE} px: "
            "perceptual hashes of tiny images collide); exact copies were") if unhashed else ""
    shown = [("exact", row, match) for row, match in exact_rows.items()] + \
            [("near", row, match) for row, match in near_rows.items()]
    refs, train_refs = evaluated.table["ref"].astype(str).tolist(), training.table["ref"].astype(str).tolist()
    return Overlap(
        True, note, training_images=len(training), evaluated_images=len(evaluated), exact=len(exact_rows),
        near=len(near_rows), max_distance=max_distance,
        examples=[{"evaluated": refs[row], "training": train_refs[match], "kind": kind}
                  for kind, row, match in shown[:examples]],
    )
