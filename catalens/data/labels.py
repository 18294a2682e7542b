"""Label mappings (rename, merge, drop classes) and class filters (min count, top-K, cap per class).

A mapping file is YAML or JSON:

    upper part: [T-shirt/top, Pullover, Coat, Shirt]   # a list merges classes under a new name
    Trouser: trousers                                  # a string renames one class
    Bag: null                                          # null drops a class
Classes the file does not name are kept as they are.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml

from catalens.data.catalog import Catalog
from catalens.errors import CatalensError

BUILTIN_MAPPINGS = {
    "fashion-mnist-groups": {
        "upper part": ["T-shirt/top", "Pullover", "Coat", "Shirt"],
        "bottom part": ["Trouser"],
        "one piece": ["Dress"],
        "footwear": ["Sandal", "Sneaker", "Ankle boot"],
        "bags": ["Bag"],
    }
}


def read_mapping(spec: str | dict) -> dict:
    """A mapping from a built-in name, a .yaml/.yml/.json file, or a dict."""
    if isinstance(spec, dict):
        return spec
    if spec in BUILTIN_MAPPINGS:
        return BUILTIN_MAPPINGS[spec]
    path = Path(spec).expanduser()
    if not path.is_file():
        raise CatalensError(
            f"label mapping {spec!r} is neither a file nor a built-in mapping ({', '.join(BUILTIN_MAPPINGS)})"
        )
    try:
        text = path.read_text()
        mapping = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        raise CatalensError(f"cannot parse label mapping {path}: {str(error).splitlines()[0]}") from error
    if not isinstance(mapping, dict) or not mapping:
        raise CatalensError(f"label mapping {path} must be a non-empty dictionary (new name: [old names], ...)")
    return mapping


def resolve_mapping(mapping: dict, classes: list[str]) -> tuple[dict[str, str | None], list[str]]:
    """Turn a mapping into old class -> new class (None = drop) and the new class order."""
    old_to_new: dict[str, str | None] = {}
    for key, value in mapping.items():
        key = str(key)
        if isinstance(value, list):
            targets = [(str(old), key) for old in value]
        elif value is None:
            targets = [(key, None)]
        elif isinstance(value, (str, int, float)):
            targets = [(key, str(value))]
        else:
            raise CatalensError(f"label mapping entry {key!r} must be a list, a name or null")
        for old, new in targets:
            if old not in classes:
                raise CatalensError(
                    f"unknown class {old!r} in the label mapping; the data's classes are: {', '.join(classes)}"
                )
            if old in old_to_new:
                raise CatalensError(f"class {old!r} appears twice in the label mapping")
            old_to_new[old] = new
    new_order: list[str] = []
    for key, value in mapping.items():  # merged names in file order, then renamed/kept in data order
        if isinstance(value, list) and str(key) not in new_order:
            new_order.append(str(key))
    for old in classes:
        new = old_to_new.get(old, old)
        if new is not None and new not in new_order:
            new_order.append(new)
    return old_to_new, new_order


def apply_mapping(catalog: Catalog, spec: str | dict) -> Catalog:
    old_to_new, new_classes = resolve_mapping(read_mapping(spec), catalog.classes)
    table = catalog.table.copy()
    table["label"] = table["label"].map(lambda label: old_to_new.get(label, label))
    dropped = int(table["label"].isna().sum())
    result = catalog.subset(np.flatnonzero(table["label"].notna().to_numpy()))
    result.table["label"] = table["label"][table["label"].notna()].to_numpy()
    result.classes = new_classes
    name = spec if isinstance(spec, str) else "a mapping"
    result.notes = catalog.notes + [
        f"labels mapped with {name}: {len(catalog.classes)} -> {len(new_classes)} classes"
        + (f", {dropped} images of dropped classes removed" if dropped else "")
    ]
    return result


def filter_classes(
    catalog: Catalog,
    min_per_class: int = 0,
    top_classes: int | None = None,
    max_per_class: int | None = None,
    seed: int = 0,
) -> Catalog:
    """Drop classes with fewer than `min_per_class` images, keep the `top_classes` largest, cap each class."""
    counts = catalog.class_counts()
    keep = [name for name in catalog.classes if counts[name] >= max(min_per_class, 1)]
    notes = list(catalog.notes)
    if min_per_class and len(keep) < len(catalog.classes):
        gone = [name for name in catalog.classes if name not in keep]
        notes.append(f"{len(gone)} classes under {min_per_class} images dropped: {', '.join(gone[:10])}")
    if top_classes and len(keep) > top_classes:
        ranked = sorted(keep, key=lambda name: (-counts[name], name))[:top_classes]
        notes.append(f"kept the {top_classes} largest of {len(keep)} classes")
        keep = [name for name in keep if name in ranked]
    if len(keep) == len(catalog.classes) and not max_per_class:
        return catalog
    if not keep:
        raise CatalensError("no class is left after filtering; lower --min-per-class")
    result = catalog.subset(catalog.table["label"].isin(keep))
    result.classes = keep
    if max_per_class:
        rng = np.random.default_rng(seed)
        rows = []
        for _, group in result.table.groupby("label", sort=False):
            index = group.index.to_numpy()
            rows.append(index if len(index) <= max_per_class else rng.choice(index, max_per_class, replace=False))
        capped = sum(1 for name, count in result.class_counts().items() if count > max_per_class)
        result = result.subset(np.sort(np.concatenate(rows)))
        result.classes = keep
        if capped:
            notes.append(f"{capped} classes capped at {max_per_class} images")
    result.notes = notes
    return result
