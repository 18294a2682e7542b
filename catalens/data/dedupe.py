"""Duplicate images removed from a catalog (`--dedupe`): exact (the same file, or identical bytes) and near
(perceptual hashes within a Hamming distance), kept one per cluster. What counts as the same image is identity.py's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from catalens.data.identity import clusters_of, file_digests, near_pairs


@dataclass
class Duplicates:
    keep: np.ndarray  # boolean mask over the input rows
    clusters: list[list[int]] = field(default_factory=list)  # row numbers of each cluster of 2+, kept one first
    exact: int = 0  # rows removed as exact duplicates
    near: int = 0  # rows removed as near duplicates


def find_duplicates(paths: list[Path], hashes: np.ndarray | None, max_distance: int,
                    valid: np.ndarray | None = None) -> Duplicates:
    """Rows to keep: one per cluster of exact duplicates (same path or same bytes), then one per cluster of
    near duplicates (perceptual hash distance <= max_distance; rows whose hash is not `valid` are left out of
    that search); the first row of a cluster is kept."""
    n = len(paths)
    keys = [str(Path(p).resolve()) for p in paths]
    digests = file_digests([Path(p) for p in paths])
    exact_key = [digest or key for digest, key in zip(digests, keys)]
    codes = np.unique(np.array(exact_key, dtype=object), return_inverse=True)[1]
    first = np.full(codes.max() + 1 if n else 0, -1)
    keep = np.zeros(n, bool)
    for row, code in enumerate(codes):
        if first[code] < 0:
            first[code] = row
            keep[row] = True
    exact_removed = int(n - keep.sum())
    groups: dict[int, list[int]] = {}
    for row, code in enumerate(codes):
        groups.setdefault(int(first[code]), []).append(row)
    rows = np.flatnonzero(keep if valid is None else keep & valid)
    near_removed = 0
    if hashes is not None and len(rows):
        labels = clusters_of(near_pairs(hashes[rows], max_distance), len(rows))
        seen: dict[int, int] = {}
        for position, label in enumerate(labels):
            row = int(rows[position])
            if label in seen:
                keep[row] = False
                near_removed += 1
                groups[seen[label]] += groups.pop(row)
            else:
                seen[label] = row
    clusters = [members for members in groups.values() if len(members) > 1]
    return Duplicates(keep, clusters, exact_removed, near_removed)
