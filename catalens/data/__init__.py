"""From a data spec to the Catalog a command works on: source, label mapping, class filters, splits."""

from __future__ import annotations

from catalens.data.catalog import Catalog
from catalens.data.labels import apply_mapping, filter_classes
from catalens.data.options import DataOptions  # noqa: F401 (its home for callers: catalens.data)
from catalens.data.sources import open_source
from catalens.data.splits import ensure_splits
from catalens.errors import CatalensError


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
    if options.group_by not in (None, "photo") and not catalog.source.startswith("csv:"):
        raise CatalensError(f"--group-by {options.group_by}: a column name works for csv: sources only; other "
                            "sources group by their products, or by near-identical photos (--group-by photo: none)")
    if split:
        catalog = ensure_splits(catalog, tuple(options.split_ratios), seed=options.seed,
                                val_fraction=options.val_fraction, group_by=options.group_by)
    return catalog
