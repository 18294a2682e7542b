"""Seeded, stratified splits grouped by product: no product's images land in two splits."""

from __future__ import annotations

import numpy as np

from catalens.data.catalog import Catalog
from catalens.errors import CatalensError


def split_counts(n: int, ratios: tuple[float, ...]) -> list[int]:
    """Split n products by ratios; every split with a positive ratio gets one before any gets two,
    train first, so a class with 1 product goes to train and with 2 to train and val."""
    counts = [0] * len(ratios)
    order = [i for i in range(len(ratios)) if ratios[i] > 0]
    for i in order[:n]:
        counts[i] = 1
    remaining = n - sum(counts)
    if remaining > 0:
        total = sum(ratios)
        extra = [max(0.0, ratios[i] / total * n - counts[i]) for i in range(len(ratios))]
        floors = [int(e) for e in extra]
        counts = [c + f for c, f in zip(counts, floors)]
        left = n - sum(counts)
        for i in sorted(range(len(ratios)), key=lambda i: -(extra[i] - floors[i]))[:left]:
            counts[i] += 1
    return counts


def assign_splits(
    catalog: Catalog, ratios: tuple[float, ...] = (0.8, 0.1, 0.1), names=("train", "val", "test"), seed: int = 0,
    rows: np.ndarray | None = None,
) -> tuple[Catalog, list[str]]:
    """Assign `names` to the rows (default: all) by product, stratified by each product's majority label."""
    if len(ratios) != len(names) or any(r < 0 for r in ratios) or sum(ratios) <= 0:
        raise CatalensError(f"split ratios {ratios} must be {len(names)} non-negative numbers")
    table = catalog.table
    rows = np.arange(len(table)) if rows is None else rows
    part = table.iloc[rows]
    product_label = part.groupby("product_id", sort=False)["label"].agg(lambda s: s.value_counts().index[0])
    rng = np.random.default_rng(seed)
    assignment: dict = {}
    notes = []
    for label, products in product_label.groupby(product_label, sort=True):
        ids = products.index.to_numpy()
        ids = ids[rng.permutation(len(ids))]
        counts = split_counts(len(ids), ratios)
        if len(ids) < sum(1 for r in ratios if r > 0):
            placed = ", ".join(f"{c} {name}" for c, name in zip(counts, names) if c)
            notes.append(f"class {label!r} has only {len(ids)} product(s): {placed}")
        start = 0
        for count, name in zip(counts, names):
            for product in ids[start:start + count]:
                assignment[product] = name
            start += count
    result = catalog.subset(np.arange(len(table)))
    result.table.loc[rows, "split"] = part["product_id"].map(assignment).to_numpy()
    result.notes = catalog.notes + notes
    return result, notes


def ensure_splits(catalog: Catalog, ratios=(0.8, 0.1, 0.1), seed: int = 0,
                  val_fraction: float | None = None) -> Catalog:
    """Give an unsplit catalog train/val/test splits; carve a validation split from `train` when missing.

    `val_fraction` is the share of train products moved to val when the data has no val split
    (default: taken from `ratios`); 0 keeps all of train for training.
    """
    splits = catalog.table["split"]
    if (splits == "").all():
        result, _ = assign_splits(catalog, ratios, seed=seed)
        result.notes.append(
            "split by product, stratified, seed {}: {}".format(
                seed, ", ".join(f"{n} {(result.table['split'] == n).sum()}" for n in ("train", "val", "test"))
            )
        )
        return result
    if (splits == "").any():
        raise CatalensError("some items have a split and others have none; give every item a split or none")
    if catalog.has_split("val") or not catalog.has_split("train"):
        return catalog
    fraction = ratios[1] / (ratios[0] + ratios[1]) if val_fraction is None else val_fraction
    if fraction <= 0:
        return catalog
    rows = np.flatnonzero((splits == "train").to_numpy())
    result, _ = assign_splits(catalog, (1 - fraction, fraction), names=("train", "val"), seed=seed, rows=rows)
    result.notes.append(f"validation split carved from train: {fraction:.0%} of train products, seed {seed}")
    return result


def stratified_sample(catalog: Catalog, limit: int, seed: int = 0) -> Catalog:
    """At most `limit` items, each class keeping its share (at least one item per class when possible)."""
    if limit <= 0 or len(catalog) <= limit:
        return catalog
    rng = np.random.default_rng(seed)
    groups = [group.index.to_numpy() for _, group in catalog.table.groupby("label", sort=True)]
    sizes = np.array([len(g) for g in groups])
    quota = np.maximum(1, np.floor(sizes * limit / sizes.sum()).astype(int))
    while quota.sum() > limit and (quota > 1).any():
        quota[np.argmax(quota)] -= 1
    left = limit - quota.sum()
    for i in np.argsort(-(sizes * limit / sizes.sum() - quota))[: max(0, left)]:
        quota[i] += 1
    rows = np.concatenate([rng.choice(g, min(q, len(g)), replace=False) for g, q in zip(groups, quota)])
    return catalog.subset(np.sort(rows))
