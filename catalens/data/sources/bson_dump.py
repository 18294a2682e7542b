"""`bson:PATH`: a BSON product dump (CDiscount's train.bson / test.bson) as a Catalog, without extraction.

The index (bson_index.py) says where each product's document is; sampling, class filters and the level of the
category tree are applied to the index (one row per product) before the Catalog (one row per image) is built,
so a 58 GB file can be sampled down cheaply. Images are read on demand: seek, read one document, decode it.
A catalog row's `ref` is `offset * 128 + image number`.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import bson
import numpy as np
import pandas as pd
from PIL import Image

from catalens.data.catalog import Catalog
from catalens.data.categories import find_categories
from catalens.data.images import describe_failure, load_image
from catalens.data.options import DataOptions
from catalens.data.sources.bson_index import FLAG_BAD_ID, FLAG_NO_CATEGORY, FLAG_NO_IMGS, open_index
from catalens.data.targets import column, parse_names
from catalens.errors import CatalensError

IMAGES_PER_REF = 128  # ref = document offset * 128 + image number


class BsonReader:
    """Reads one image of one product by seeking to its document; picklable, one file handle per process."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        self._fd: int | None = None
        self._pid: int | None = None

    def __getstate__(self):
        return {"path": self.path, "_fd": None, "_pid": None}

    def _handle(self) -> int:
        if self._fd is None or self._pid != os.getpid():  # a DataLoader worker opens its own
            self._fd, self._pid = os.open(self.path, os.O_RDONLY), os.getpid()
        return self._fd

    def document(self, offset: int) -> dict:
        fd = self._handle()
        length = int.from_bytes(os.pread(fd, 4, offset), "little", signed=True)
        data = os.pread(fd, length, offset)
        if len(data) != length:
            raise OSError(f"document at offset {offset} is cut short")
        return bson.decode(data)

    def picture(self, ref) -> bytes:
        offset, number = divmod(int(ref), IMAGES_PER_REF)
        return bytes(self.document(offset)["imgs"][number]["picture"])

    def read(self, ref) -> Image.Image:
        return load_image(io.BytesIO(self.picture(ref)))

    def check(self, ref) -> str | None:
        """None if the image decodes, else why not."""
        try:
            load_image(io.BytesIO(self.picture(ref)), draft_size=(64, 64))
        except Exception as error:  # noqa: BLE001 - any decode failure is a data problem to report
            return describe_failure(error)
        return None


def usable_products(records: np.ndarray, labelled: bool) -> np.ndarray:
    """Products with an integer _id and at least one JPEG image (and, in a labelled file, a category_id)."""
    usable = ((records["flags"] & (FLAG_BAD_ID | FLAG_NO_IMGS)) == 0) & (records["images"] > 0)
    usable &= records["bad"] != (1 << np.minimum(records["images"], 8)) - 1
    if labelled:
        usable &= (records["flags"] & FLAG_NO_CATEGORY) == 0
    return usable


def image_catalog(path: Path, products: np.ndarray, labels: np.ndarray | None = None,
                  extra: dict[str, np.ndarray] | None = None) -> Catalog:
    """One catalog row per JPEG image of the given index records (products), in their order; `extra`: more columns,
    one value per product."""
    images = products["images"].astype(np.int64)
    product = np.repeat(np.arange(len(products)), images)
    number = np.arange(len(product)) - np.repeat(np.cumsum(images) - images, images)
    bad = products["bad"][product].astype(np.int64)
    keep = (number >= 8) | ((bad >> np.minimum(number, 7)) & 1 == 0)
    product, number = product[keep], number[keep]
    ids = products["id"][product].astype(str).astype(object)
    table_labels = labels[product] if labels is not None else np.full(len(product), "", dtype=object)
    catalog = Catalog.from_records(
        {"item_id": (pd.Series(ids) + "-" + pd.Series(number).astype(str)).to_numpy(dtype=object),
         "product_id": ids, "ref": products["offset"][product] * IMAGES_PER_REF + number, "label": table_labels,
         **{name: values[product] for name, values in (extra or {}).items()}},
        classes=sorted(set(table_labels) - {""}), reader=BsonReader(path), source=f"bson:{path}",
    )
    catalog.filtered = True
    return catalog


def product_labels(index_records: np.ndarray, tree, level: int, labelled: bool) -> np.ndarray:
    """The class of every product at `level` ('' when unlabelled or unknown to the tree)."""
    categories = index_records["category"]
    if not labelled:
        return np.full(len(categories), "", dtype=object)
    if tree is not None:
        return tree.labels_for(categories, level)
    if level != 3:
        raise CatalensError(f"--level {level} needs the category tree: give --categories category_names.csv "
                            "(or put it beside the BSON file)")
    labels = categories.astype(str).astype(object)
    labels[categories < 0] = ""
    return labels


LEVELS = {"level1": 1, "level2": 2, "level3": 3}  # --targets on a BSON dump: its category levels


def target_levels(spec, tree, labelled: bool) -> list[str]:
    """--targets level3,level2,level1 (any of them, the first is the label), checked; [] without --targets."""
    if not spec:
        return []
    names = parse_names(spec)
    unknown = [name for name in names if name not in LEVELS]
    if unknown:
        raise CatalensError(f"--targets {','.join(names)}: a BSON dump's targets are its category levels "
                            f"{', '.join(LEVELS)} (level3: the leaf category_id); {unknown[0]} is not one")
    if not labelled:
        raise CatalensError("--targets needs a labelled BSON dump (train.bson: each product has a category_id)")
    if tree is None and names != ["level3"]:
        raise CatalensError("--targets level1/level2 need the category tree: give --categories category_names.csv "
                            "or put it beside the BSON file")
    return names


def sample_products(labels: np.ndarray, rows: np.ndarray, sample: int | None, min_per_class: int,
                    max_per_class: int | None, seed: int) -> tuple[np.ndarray, list[str]]:
    """Product rows kept: a uniform sample of N products, then classes under min_per_class products dropped,
    then each class capped at max_per_class products (seeded)."""
    rng = np.random.default_rng(seed)
    notes = []
    if sample and sample < len(rows):
        rows = np.sort(rng.choice(rows, sample, replace=False))
        notes.append(f"uniform sample of {sample:,} products (seed {seed})")
    if min_per_class or max_per_class:
        counts = pd.Series(labels[rows]).value_counts()
        if min_per_class:
            rare = counts.index[counts < min_per_class]
            if len(rare):
                rows = rows[~np.isin(labels[rows], rare)]
                notes.append(f"{len(rare)} classes under {min_per_class} products dropped")
        if max_per_class:
            frame = pd.DataFrame({"row": rows, "label": labels[rows]})
            frame = frame.sample(frac=1.0, random_state=seed).groupby("label", sort=False).head(max_per_class)
            capped = int((counts > max_per_class).sum())
            rows = np.sort(frame["row"].to_numpy())
            if capped:
                notes.append(f"{capped} classes capped at {max_per_class} products")
    return rows, notes


def open_bson(rest: str, verify: bool = False, options=None) -> Catalog:
    """A BSON dump as a Catalog; `options` (DataOptions): categories, level, sample, min/max per class, seed."""

    options = options or DataOptions()
    if not rest:
        raise CatalensError("give the BSON file after the prefix, e.g. bson:train.bson")
    path = Path(rest).expanduser()
    index = open_index(path)
    records = index.records
    tree = find_categories(path, options.categories)
    labelled = index.labelled
    targets = target_levels(options.targets, tree, labelled)
    level = LEVELS[targets[0]] if targets else int(options.level or 3)
    problems = list(index.problems)
    usable = usable_products(records, labelled)
    labels = product_labels(records, tree, level, labelled)
    if labelled and tree is not None:
        unknown = usable & (labels == "")
        for record in records[unknown]:
            problems.append({"ref": f"product {record['id']} (offset {record['offset']})",
                             "reason": f"category_id {record['category']} is not in {Path(tree.path).name}; "
                                       "product ignored"})
        usable &= ~unknown
    rows, notes = sample_products(labels, np.flatnonzero(usable), options.sample,
                                  options.min_per_class, options.max_per_class, options.seed)
    columns = {column(name): product_labels(records[rows], tree, LEVELS[name], labelled) for name in targets}
    catalog = image_catalog(path, records[rows], labels[rows], columns)
    catalog.problems = problems
    catalog.notes = [f"BSON index: {len(records):,} products ({'reused' if index.reused else 'built in'}"
                     f" {index.seconds:.1f} s)", *notes]
    if tree is not None and labelled:
        catalog.hierarchy = tree.hierarchy(level, catalog.classes)
        catalog.level = level
    if verify:
        from catalens.data.sources.folder import drop_unreadable

        catalog = drop_unreadable(catalog)
    return catalog
