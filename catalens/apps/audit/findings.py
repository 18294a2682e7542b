"""From the evidence to findings: one row per suspect item, with its kind, a score (within a kind, higher means
more likely a real problem), the given and suggested labels, its duplicate cluster, and the evidence in words."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from catalens.data.identity import clusters_of, near_pairs, popcount

KINDS = ("label", "duplicate", "leak", "outlier", "broken")
SMALL_COSINE = 0.98  # tiny images (identity.MIN_SIDE): no pHash, near-identical embeddings only
PHASH_BITS = 4  # near duplicates by pHash: re-encoded and resized copies are 0-4 bits apart, crops 8-24 (bench)
COSINE = 0.92  # near duplicates by embedding: cosine at least this (chosen on bench/audit.py's seed-0 copies)
OUTLIER_Z = 5.0  # feature outliers: robust z-score of the mean distance to the 10 nearest neighbours
UNIFORM_STD = 6.0  # near-uniform: pixel standard deviation (0-255) under this
ASPECT = 4.0  # extreme aspect ratio: longer side over shorter side above this


@dataclass
class Finding:
    row: int
    kind: str
    score: float
    given_label: str = ""
    suggested_label: str = ""
    cluster: str = ""
    evidence: str = ""


def duplicate_pairs(digest: list, phash: np.ndarray, hashed: np.ndarray, similarities: np.ndarray,
                    neighbours: np.ndarray, cosine: float = COSINE, phash_bits: int = PHASH_BITS,
                    small: np.ndarray | None = None) -> dict:
    """{(i, j): (similarity, evidence)} of duplicate pairs (i < j): same bytes (similarity 1), close perceptual
    hashes (1 - bits apart / 64), or close embeddings (their cosine). Images under 64 px on a side (`small`) are
    compared by bytes and by embeddings at cosine >= 0.98 only: a perceptual hash of 28 px pictures matches most
    shoes with most shoes (as in `evaluate`'s leakage check)."""
    pairs: dict[tuple[int, int], tuple[float, str]] = {}
    first: dict[str, int] = {}
    for row, key in enumerate(digest):
        if key is None:
            continue
        if key in first:
            pairs[(first[key], row)] = (1.0, "identical bytes")
        else:
            first[key] = row
    small = np.zeros(len(digest), bool) if small is None else small
    rows = np.flatnonzero(hashed & ~small)
    for a, b in near_pairs(phash[rows], phash_bits):
        i, j = sorted((int(rows[a]), int(rows[b])))
        distance = int(popcount(phash[i] ^ phash[j]))
        pairs.setdefault((i, j), (1 - distance / 64, f"pHash {distance} bits apart"))
    close = np.argwhere(similarities >= cosine)
    for i, slot in close:
        j = int(neighbours[i, slot])
        if (small[i] or small[j]) and similarities[i, slot] < SMALL_COSINE:
            continue
        a, b = sorted((int(i), j))
        pairs.setdefault((a, b), (float(similarities[i, slot]), f"cosine {similarities[i, slot]:.3f}"))
    return pairs


def duplicate_findings(pairs: dict, n: int, labels: list[str], splits: list[str], items: list[str],
                       belief: dict[int, np.ndarray] | None = None, classes: list[str] | None = None) -> list[Finding]:
    """Every member of a duplicate cluster, and, for clusters that cross train and val/test, its members outside
    train again as `leak`. Clusters with several labels suggest the majority label; a tie is broken by the summed
    out-of-fold probabilities of the cluster's members (`belief`: row -> probabilities over `classes`), and
    without them no label is suggested."""
    if not pairs:
        return []
    edges = np.array(list(pairs), dtype=np.int64)
    clusters = clusters_of(edges, n)
    members: dict[int, list[int]] = {}
    for i, j in edges:
        for row in (int(i), int(j)):
            members.setdefault(int(clusters[row]), [])
    for row in range(n):
        if int(clusters[row]) in members:
            members[int(clusters[row])].append(row)
    evidence_of: dict[int, str] = {}
    best: dict[int, float] = {}
    for (i, j), (similarity, text) in sorted(pairs.items(), key=lambda pair: -pair[1][0]):
        evidence_of.setdefault(j, f"{text} to {items[i]}")
        evidence_of.setdefault(i, f"{text} to {items[j]}")
        best[i], best[j] = max(best.get(i, 0.0), similarity), max(best.get(j, 0.0), similarity)
    findings = []
    for number, rows in enumerate(sorted(members.values(), key=lambda rows: (-len(rows), rows[0]))):
        cluster = f"d{number}"
        names = [labels[row] for row in rows if labels[row]]
        majority = cluster_label(rows, names, belief or {}, classes or [])
        mixed = len(set(names)) > 1
        in_train = any(splits[row] == "train" for row in rows)
        for row in rows:
            score = best.get(row, 0.0)
            text = evidence_of.get(row, "") + (f"; the cluster's labels differ ({', '.join(sorted(set(names)))})"
                                               if mixed else "")
            findings.append(Finding(row, "duplicate", score + (1.0 if mixed else 0.0), labels[row],
                                    majority if mixed and labels[row] != majority else "", cluster, text))
            if in_train and splits[row] in ("val", "test"):
                findings.append(Finding(row, "leak", score, labels[row], "", cluster,
                                        f"{splits[row]} image duplicated in train ({evidence_of.get(row, '')})"))
    return findings


def cluster_label(rows: list[int], names: list[str], belief: dict[int, np.ndarray], classes: list[str]) -> str:
    """The label a duplicate cluster should carry: the majority of its labels; among tied labels, the one the
    members' out-of-fold probabilities favour; "" when they cannot break the tie."""
    if not names:
        return ""
    counts = {name: names.count(name) for name in dict.fromkeys(names)}
    top = max(counts.values())
    tied = [name for name, count in counts.items() if count == top]
    if len(tied) == 1:
        return tied[0]
    known = [belief[row] for row in rows if row in belief]
    if not known or not all(name in classes for name in tied):
        return ""
    total = np.sum(known, axis=0)
    scores = {name: float(total[classes.index(name)]) for name in tied}
    best = max(scores.values())
    winners = [name for name, score in scores.items() if score >= best - 1e-9]
    return winners[0] if len(winners) == 1 else ""


def outlier_findings(z: np.ndarray, readable: np.ndarray, pixel_std: np.ndarray, width: np.ndarray,
                     height: np.ndarray, labels: list[str]) -> list[Finding]:
    findings = []
    for row in np.flatnonzero(readable & (z > OUTLIER_Z)):
        findings.append(Finding(int(row), "outlier", float(z[row]), labels[row],
                                evidence=f"far from every other image (robust z {z[row]:.1f})"))
    for row in np.flatnonzero(readable & (pixel_std < UNIFORM_STD)):
        findings.append(Finding(int(row), "outlier", 100.0 + float(UNIFORM_STD - pixel_std[row]), labels[row],
                                evidence=f"near-uniform image (pixel standard deviation {pixel_std[row]:.1f})"))
    ratio = np.maximum(width, height) / np.maximum(np.minimum(width, height), 1)
    for row in np.flatnonzero((width > 0) & (ratio > ASPECT)):
        findings.append(Finding(int(row), "outlier", 50.0 + float(ratio[row]), labels[row],
                                evidence=f"extreme aspect ratio {width[row]}x{height[row]}"))
    return findings
