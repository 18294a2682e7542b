"""Nearest neighbours in feature space through a faiss index, never an N x N matrix: exact inner product on
normalised vectors for up to 20,000 items, an inverted-file index (IVF, 16 of its lists probed per query) above;
vectors wider than 256 are first reduced to 256 dimensions by PCA when there are more than 20,000 of them."""

from __future__ import annotations

import numpy as np

EXACT_UP_TO = 20_000
REDUCED_DIMENSIONS = 256
CHUNK = 8192


def unit_rows(features: np.ndarray) -> np.ndarray:
    """Each row scaled to length 1 (float32; all-zero rows stay zero): inner products become cosines. The one
    row normalisation of the package: search, fusion of image and title features, matching."""
    features = np.asarray(features, dtype=np.float32)
    return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)


def normalised(features: np.ndarray, rows: np.ndarray) -> np.ndarray:
    return unit_rows(features[rows])


def nearest(features: np.ndarray, rows: np.ndarray, k: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(cosine similarities (n, k), neighbour rows (n, k)) of each of `rows` among `rows`, itself excluded; -1
    where fewer than k neighbours exist."""
    import faiss

    n, d = len(rows), features.shape[1]
    if n > EXACT_UP_TO and d > REDUCED_DIMENSIONS:  # reduced chunk by chunk: never a second full-width copy
        pca = faiss.PCAMatrix(d, REDUCED_DIMENSIONS)
        pca.train(normalised(features, np.sort(np.random.default_rng(seed).choice(rows, min(n, 50_000),
                                                                                   replace=False))))
        x = np.empty((n, REDUCED_DIMENSIONS), np.float32)
        for start in range(0, n, CHUNK):
            x[start:start + CHUNK] = pca.apply(normalised(features, rows[start:start + CHUNK]))
        x = unit_rows(x)
        d = REDUCED_DIMENSIONS
    else:
        x = normalised(features, rows)
    if n <= EXACT_UP_TO:
        index = faiss.IndexFlatIP(d)
    else:
        lists = int(4 * np.sqrt(n))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, lists, faiss.METRIC_INNER_PRODUCT)
        index.train(x[np.random.default_rng(seed).choice(n, min(n, 40 * lists), replace=False)])
        index.nprobe = 16
    index.add(x)
    wanted = min(k + 1, n)
    similarities = np.full((n, k), -1.0, np.float32)
    neighbours = np.full((n, k), -1, np.int64)
    for start in range(0, n, CHUNK):
        sims, found = index.search(x[start:start + CHUNK], wanted)
        for i in range(len(found)):
            me = start + i
            keep = [(s, j) for s, j in zip(sims[i], found[i]) if j >= 0 and j != me][:k]
            if keep:
                similarities[me, :len(keep)] = [s for s, _ in keep]
                neighbours[me, :len(keep)] = [rows[j] for _, j in keep]
    return similarities, neighbours


def outlier_scores(similarities: np.ndarray) -> np.ndarray:
    """Mean cosine distance to the nearest neighbours, as a robust z-score (median, MAD): higher is stranger."""
    valid = similarities > -1
    distance = np.where(valid, 1 - similarities, np.nan)
    mean = np.nanmean(distance, axis=1)
    median = np.nanmedian(mean)
    mad = np.nanmedian(np.abs(mean - median)) * 1.4826
    return (mean - median) / max(mad, 1e-9)
