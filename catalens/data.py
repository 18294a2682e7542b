"""From a data spec to the Catalog a command works on: source, label mapping, class filters, splits."""

from __future__ import annotations

from dataclasses import dataclass

from .catalog import Catalog
from .labels import apply_mapping, filter_classes
from .sources import open_source
from .splits import ensure_splits


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


def load_catalog(spec: str, options: DataOptions | None = None, verify: bool = False, split: bool = True) -> Catalog:
    options = options or DataOptions()
    catalog = open_source(spec, verify=verify, options=options)
    if options.labels:
        catalog = apply_mapping(catalog, options.labels)
    if catalog.filtered:  # min/max per class already applied by the source (per product)
        catalog = filter_classes(catalog, 0, options.top_classes, None, seed=options.seed)
    else:
        catalog = filter_classes(
            catalog, options.min_per_class, options.top_classes, options.max_per_class, seed=options.seed
        )
    if split:
        catalog = ensure_splits(catalog, tuple(options.split_ratios), seed=options.seed,
                                val_fraction=options.val_fraction)
    return catalog
