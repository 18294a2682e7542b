"""The Catalog: the one table every data source produces and everything downstream reads.

One row per image: `item_id`, `product_id` (images of one product never straddle splits), `ref`
(how the source's reader finds the image: a path, an array index, later a BSON offset), `label`,
`split` ("train", "val", "test" or "" when not yet assigned), `title`, `description`; with `--targets`, one
`target:NAME` column per target, and with `--tags` a `tags` column (data/targets.py).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd
from PIL import Image

COLUMNS = ["item_id", "product_id", "ref", "label", "split", "title", "description"]
SPLITS = ("train", "val", "test")


class ImageReader(Protocol):
    """Turns a catalog `ref` into an RGB (or L) PIL image. Must be picklable for DataLoader workers."""

    def read(self, ref) -> Image.Image: ...


ZERO_BYTE = "zero-byte file"  # the reason a listing gives for an empty file it leaves out


@dataclass
class Catalog:
    table: pd.DataFrame
    classes: list[str]
    reader: ImageReader
    source: str
    channels: int = 3  # 1 for grayscale sources such as Fashion-MNIST
    native_size: tuple[int, int] | None = None  # (height, width) when every image has the same size
    arrays: np.ndarray | None = None  # in-memory uint8 images (N, H, W[, C]) indexed by `ref`
    problems: list[dict] = field(default_factory=list)  # {"ref": ..., "reason": ...}
    notes: list[str] = field(default_factory=list)  # what was done to the data, in words
    filtered: bool = False  # the source applied min/max per class itself (BSON: per product, at index time)
    hierarchy: dict[str, dict] | None = None  # class -> names of its category levels (BSON with a tree)
    level: int | None = None  # the tree level the classes are at
    report: dict = field(default_factory=dict)  # source-specific findings for `catalog stats` (e.g. duplicates)

    @classmethod
    def from_records(cls, records: dict, **kwargs) -> Catalog:
        n = len(records["ref"])
        columns = {}
        for name in COLUMNS:
            values = records.get(name)
            if values is None:
                values = [str(i) for i in range(n)] if name == "item_id" else [""] * n
            columns[name] = values
        columns.update({name: values for name, values in records.items() if name.startswith("target:")
                        or name == "tags"})
        table = pd.DataFrame(columns)
        if "product_id" not in records:
            table["product_id"] = table["item_id"]
        return cls(table=table, **kwargs)

    def __len__(self) -> int:
        return len(self.table)

    # -- views -----------------------------------------------------------------------------
    def subset(self, mask) -> Catalog:
        """A catalog with the rows selected by a boolean mask or an index array; classes unchanged."""
        table = self.table[mask] if isinstance(mask, pd.Series) else self.table.iloc[mask]
        return replace(self, table=table.reset_index(drop=True))

    def left_out_files(self) -> list[dict]:
        """The problems that are files the listing left out of the table (zero-byte files), {"ref", "reason"}: the
        other problems are rows kept with a note, or not files at all."""
        return [problem for problem in self.problems if problem.get("reason") == ZERO_BYTE]

    def split(self, name: str) -> Catalog:
        return self.subset(self.table["split"] == name)

    def has_split(self, name: str) -> bool:
        return bool((self.table["split"] == name).any())

    @property
    def labels(self) -> np.ndarray:
        """Integer class index of every row (-1 for an unlabelled row)."""
        index = {name: i for i, name in enumerate(self.classes)}
        return self.table["label"].map(lambda label: index.get(label, -1)).to_numpy(np.int64)

    def class_counts(self) -> dict[str, int]:
        counts = self.table["label"].value_counts()
        return {name: int(counts.get(name, 0)) for name in self.classes}

    def read(self, row: int) -> Image.Image:
        return self.reader.read(self.table["ref"].iat[row])

    def fingerprint(self) -> str:
        """A short hash of what the catalog holds (ids, labels, splits): two runs on the same data agree."""
        digest = hashlib.sha256()
        digest.update(self.source.encode())
        digest.update("\x1f".join(self.classes).encode())
        for column in ("item_id", "label", "split"):
            digest.update(pd.util.hash_pandas_object(self.table[column], index=False).to_numpy().tobytes())
        return digest.hexdigest()[:16]

    @property
    def identity(self) -> str:
        return source_identity(self.source)

    def content_fingerprint(self) -> str:
        """A short hash of what the catalog holds wherever it lives (class names, item ids, labels; not the
        splits, not the location): the same data copied or spelled differently agrees."""
        digest = hashlib.sha256("\x1f".join(self.classes).encode())
        for column in ("item_id", "label"):
            digest.update(pd.util.hash_pandas_object(self.table[column], index=False).to_numpy().tobytes())
        return digest.hexdigest()[:16]

    def stats(self) -> dict:
        """Items, products, classes, per-class counts, imbalance and problems, as plain JSON types."""
        per_class = self.class_counts()
        nonzero = [count for count in per_class.values() if count]
        per_split = {
            name: int(count) for name, count in self.table["split"].value_counts().items() if name
        }
        return {
            "source": self.source,
            "items": len(self),
            "products": int(self.table["product_id"].nunique()),
            "classes": len(self.classes),
            "per_class": per_class,
            "per_split": per_split,
            "imbalance_ratio": round(max(nonzero) / min(nonzero), 3) if nonzero else None,
            "problems": list(self.problems),
            "notes": list(self.notes),
            **self.report,
        }


class ArrayReader:
    """Reads images held in memory as a uint8 array (N, H, W) or (N, H, W, C)."""

    def __init__(self, arrays: np.ndarray):
        self.arrays = arrays

    def read(self, ref) -> Image.Image:
        return Image.fromarray(self.arrays[int(ref)])


# Source prefixes whose rest is a local path (fashion-mnist:DIR and the like are idx datasets)
PATH_PREFIXES = ("bson:", "csv:", "fashion-mnist:", "mnist:")


def source_identity(source: str) -> str:
    """One spelling per source: local paths resolved (absolute, no `..`, links followed), database URLs as
    written without a password (sources store them so), an SQLite file resolved. Two spellings of the same data
    give the same identity."""
    if not source:
        return source
    for prefix in PATH_PREFIXES + (("shards:",) if "://" not in source else ()):
        if source.startswith(prefix):
            return prefix + str(Path(source[len(prefix):]).expanduser().resolve())
    if source.startswith("sqlite:///"):
        return "sqlite:///" + str(Path(source.removeprefix("sqlite:///")).expanduser().resolve())
    if "://" in source:
        return source
    return str(Path(source).expanduser().resolve())
