"""DataOptions: what to do with a source's items; read by the sources (data.py builds the Catalog from them).
Its own module so that sources and data.py import it without importing each other."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class DataOptions:
    """What to do with a source's items before training or evaluation (all saved in a run's config)."""

    labels: str | None = None  # label mapping: file or built-in name
    min_per_class: int = 0
    top_classes: int | None = None
    max_per_class: int | None = None
    split_ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)
    val_fraction: float | None = None  # share of train carved out for validation when there is no val split
    seed: int = 0
    # product dumps (bson:FILE)
    categories: str | None = None  # category tree CSV [default: category_names.csv beside the file]
    level: int = 3  # tree level to classify at: 1, 2 or 3 (leaf category_id)
    sample: int | None = None  # a uniform sample of N products, drawn at index time
    # marketplace CSV exports (csv:FILE) and SQL databases (sqlite:///FILE, postgresql+psycopg://...)
    images: str | None = None  # image folder (CSV: default train_images/ beside it; SQL: root of relative paths)
    dedupe: bool = False  # remove exact and near duplicate images, one kept per cluster
    max_distance: int = 6  # near duplicates: perceptual-hash Hamming distance <= this
    top_groups: int | None = None  # keep the N largest label groups (before --dedupe)
    label_column: str | None = None  # the column labels come from (CSV: label_group; SQL: none = unlabelled)
    columns: str | None = None  # other column/table names: key=name,key=name
