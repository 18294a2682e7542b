"""Seeded, stratified splits grouped by product: no product's images land in two splits."""

from __future__ import annotations

import numpy as np
import pandas as pd

from catalens.data.catalog import Catalog
from catalens.errors import CatalensError


def split_counts(n: int, ratios: tuple[float, ...]) -> list[int]:
    """Split n products by ratios; every split with a positive ratio gets one before any gets two,
    train first, so a class with 1 product goes to train and with 2 to train and val."""
    counts = [0] * len(ratios)
    order = [i for i in range(len(ratios)) if ratios[i] > 0]
    for i in order[:n]:
        counts[i] = 1
    total = sum(ratios)
    for _ in range(n - sum(counts)):  # each further product to the split furthest below its share
        counts[max(order, key=lambda i: ratios[i] / total * n - counts[i])] += 1
    return counts


def group_cap(rows: int) -> int:
    """The most photos one group of look-alikes may hold: 1 % of the rows (at least 20), so that a chain of
    similar studio shots cannot pull a quarter of a catalog into one split."""
    return max(20, rows // 100)


GROUP_DISTANCE = 6  # bits of 64: photos this close (or byte-identical) are shots of one item and split together
MAX_GROUPED = 100_000  # beyond this many images the near-identical search is skipped, and a note says so


def near_identical_groups(catalog: Catalog, rows: np.ndarray,
                          group_by: str | None = None) -> tuple[np.ndarray | None, str]:
    """A group number per row: exact copies and photos within GROUP_DISTANCE bits of perceptual hash (identity.py's
    multi-index search) share one, so a burst of near-identical shots never straddles train and validation
    (closest pairs first, no group above group_cap: look-alike studio shots must not chain into a giant group).
    (None, why) when the catalog's products already group its images, when `group_by` is "photo", or when it is
    too big to search."""
    table = catalog.table.iloc[rows]
    if "group" in table:  # a source's own grouping column (csv --group-by COLUMN)
        return pd.factorize(table["group"].astype(str))[0], f"grouped by the {group_by or 'group'} column"
    if not (table["product_id"].astype(str) == table["item_id"].astype(str)).all():
        return None, "grouped by product"
    if group_by == "photo":
        return None, "photo by photo (--group-by photo)"
    if len(rows) > MAX_GROUPED:
        return None, f"photo by photo (over {MAX_GROUPED:,} images: near-identical photos not searched)"
    from catalens.data.identity import capped_clusters, identify, identity_pairs, pixel_key

    if catalog.arrays is not None:  # small in-memory images: pixel-identical copies only (tiny pHashes collide)
        exact: list[str | None] = [pixel_key(catalog.arrays[index]) for index in table["ref"].astype(int)]
        hashes, valid = np.zeros(len(rows), np.uint64), np.zeros(len(rows), bool)
    else:
        identities = identify(catalog.subset(rows))
        exact, hashes, valid = identities.exact, identities.phash, identities.searchable
    pairs, distances = identity_pairs(exact, hashes, valid, GROUP_DISTANCE)
    groups = capped_clusters(pairs, distances, len(rows), group_cap(len(rows)))
    sizes = np.bincount(groups)
    grouped = int(sizes[sizes > 1].sum())
    largest = f", the largest {int(sizes.max()):,}" if sizes.max() > 2 else ""
    return groups, (f"grouped by near-identical photos (byte-identical, or perceptual hash within {GROUP_DISTANCE} "
                    f"bits): {grouped:,} of {len(rows):,} photos in {int((sizes > 1).sum()):,} groups of 2 or more"
                    f"{largest}")


def assign_splits(
    catalog: Catalog, ratios: tuple[float, ...] = (0.8, 0.1, 0.1), names=("train", "val", "test"), seed: int = 0,
    rows: np.ndarray | None = None, groups: np.ndarray | None = None,
) -> tuple[Catalog, list[str]]:
    """Assign `names` to the rows (default: all) by product (or by `groups`, one number per row), stratified by
    each group's majority label."""
    if len(ratios) != len(names) or any(r < 0 for r in ratios) or sum(ratios) <= 0:
        raise CatalensError(f"split ratios {ratios} must be {len(names)} non-negative numbers")
    table = catalog.table
    rows = np.arange(len(table)) if rows is None else rows
    part = table.iloc[rows]
    if groups is not None:
        part = part.assign(product_id=np.asarray(groups))  # a copy: the catalog keeps its product ids
    product_label = majority_labels(part)
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


def majority_labels(part: pd.DataFrame) -> pd.Series:
    """Each product's most frequent label, products in order of first appearance. Only products whose photos
    disagree are counted one by one (a Python call per product took 20 s for Fashion-MNIST's 70,000)."""
    by_product = part.groupby("product_id", sort=False)["label"]
    labels = by_product.first()
    mixed = by_product.nunique() > 1
    if mixed.any():
        disagreeing = part[part["product_id"].isin(labels.index[mixed.to_numpy()])]
        labels.update(disagreeing.groupby("product_id", sort=False)["label"].agg(
            lambda s: s.value_counts().index[0]))
    return labels


def twins_photo_by_photo(catalog: Catalog, rows: np.ndarray, groups: np.ndarray, ratios, names, seed: int) -> str:
    """How many held-out photos a photo-by-photo split (same seed) would have given a near-identical twin in
    train: what grouping protects validation from."""
    plain, _ = assign_splits(catalog, ratios, names=names, seed=seed, rows=rows)
    split = plain.table["split"].to_numpy()[rows]
    in_train = set(groups[split == "train"])
    held = split != "train"
    twins = int(sum(group in in_train for group in groups[held]))
    return f"; photo by photo, {twins:,} of {int(held.sum()):,} held-out photos would have had one in train"


def ensure_splits(catalog: Catalog, ratios=(0.8, 0.1, 0.1), seed: int = 0,
                  val_fraction: float | None = None, group_by: str | None = None) -> Catalog:
    """Give an unsplit catalog train/val/test splits; carve a validation split from `train` when missing.

    `val_fraction` is the share of train products moved to val when the data has no val split
    (default: taken from `ratios`); 0 keeps all of train for training.
    """
    splits = catalog.table["split"]
    if (splits == "").all():
        groups, how = near_identical_groups(catalog, np.arange(len(catalog)), group_by)
        result, _ = assign_splits(catalog, ratios, seed=seed, groups=groups)
        if groups is not None:
            how += twins_photo_by_photo(catalog, np.arange(len(catalog)), groups, ratios, ("train", "val", "test"),
                                        seed)
        result.notes.append(
            "split by product, stratified, seed {}: {}".format(
                seed, ", ".join(f"{n} {(result.table['split'] == n).sum()}" for n in ("train", "val", "test"))
            )
        )
        result.notes.append(f"validation and test splits {how}")
        return keep_groups(result, np.arange(len(catalog)), groups)
    if (splits == "").any():
        raise CatalensError("some items have a split and others have none; give every item a split or none")
    if catalog.has_split("val") or not catalog.has_split("train"):
        return catalog
    fraction = ratios[1] / (ratios[0] + ratios[1]) if val_fraction is None else val_fraction
    if fraction <= 0:
        return catalog
    rows = np.flatnonzero((splits == "train").to_numpy())
    groups, how = near_identical_groups(catalog, rows, group_by)
    result, _ = assign_splits(catalog, (1 - fraction, fraction), names=("train", "val"), seed=seed, rows=rows,
                              groups=groups)
    if groups is not None:
        how += twins_photo_by_photo(catalog, rows, groups, (1 - fraction, fraction), ("train", "val"), seed)
    result.notes.append(f"validation split carved from train: {fraction:.0%} of train products, seed {seed}, {how}")
    return keep_groups(result, rows, groups)


def keep_groups(catalog: Catalog, rows: np.ndarray, groups: np.ndarray | None) -> Catalog:
    """Keep the near-identical groups in a `group` column (cross-validation folds on train reuse them)."""
    if groups is not None:
        column = catalog.table["product_id"].astype(str).to_numpy(dtype=object)
        column[rows] = [f"near-{group}" for group in groups]
        catalog.table["group"] = column
    return catalog


def cv_groups(catalog: Catalog, group_by: str | None = None) -> np.ndarray:
    """A group number per row that cross-validation folds must keep together: the groups found when the splits
    were made, else the product, else (a declared split of data without products) groups of near-identical
    photos found now."""
    if "group" in catalog.table:
        return np.asarray(pd.factorize(catalog.table["group"].astype(str))[0], np.int64)
    groups, _ = near_identical_groups(catalog, np.arange(len(catalog)), group_by)
    if groups is None:
        return np.asarray(pd.factorize(catalog.table["product_id"].astype(str))[0], np.int64)
    return np.asarray(groups, np.int64)


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
