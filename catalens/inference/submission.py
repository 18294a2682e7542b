"""The CDiscount competition's submission file from a BSON dump: every product streamed through the model,
its images' probabilities averaged (products.py), one `_id,category_id` row per product, resumable."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from catalens.data.sources.bson_dump import image_catalog, usable_products
from catalens.data.sources.bson_index import open_index
from catalens.errors import CatalensError
from catalens.inference.predict import predict_catalog
from catalens.inference.products import average_by_product
from catalens.progress import make_progress, warn
from catalens.rundir.run import Model

SUBMISSION_HEADER = "_id,category_id"


def leaf_ids(model: Model) -> np.ndarray:
    """The leaf category_id of each class; refuses a model whose classes are not leaves (level 1 or 2)."""
    level = model.card.level
    if level not in (None, 3) or not all(name.isdigit() for name in model.classes):
        raise CatalensError("--submission needs a model trained on leaf categories (--level 3): its classes "
                            f"must be category_id numbers, this one has e.g. {model.classes[0]!r}")
    return np.array([int(name) for name in model.classes], dtype=np.int64)


@dataclass
class SubmissionSummary:
    path: str
    products: int
    written: int
    resumed_from: int
    unreadable: list[str] = field(default_factory=list)  # products with no readable image (fallback class)
    seconds: float = 0.0


def completed_rows(path: Path, ids: np.ndarray) -> int:
    """How many products an earlier, interrupted run already wrote (a cut last line is dropped); checks that
    they are this file's first products, in order."""
    if not path.exists():
        return 0
    text = path.read_bytes()
    if not text.startswith(SUBMISSION_HEADER.encode()):
        raise CatalensError(f"{path} exists and is not a submission file ({SUBMISSION_HEADER}); remove it or "
                            "choose another --submission file")
    complete = text[: text.rfind(b"\n") + 1]
    if len(complete) < len(text):
        with open(path, "r+b") as handle:  # drop the line an interruption cut
            handle.truncate(len(complete))
    lines = complete.decode().splitlines()[1:]
    if len(lines) > len(ids):
        raise CatalensError(f"{path} holds more rows than the BSON file has products; it is not from this file")
    written = np.array([int(line.split(",")[0]) for line in lines], dtype=np.int64)
    if not np.array_equal(written, ids[: len(written)]):
        raise CatalensError(f"{path} was written for another BSON file (its product ids differ); remove it or "
                            "choose another --submission file")
    return len(lines)


def write_submission(model: Model, spec: str, out: str | Path, batch_size: int = 256, workers: int | None = None,
                     chunk_products: int = 4096) -> SubmissionSummary:
    """Stream every product of a BSON file through the model and write `_id,category_id` rows, one per product,
    in file order; an interrupted run started again carries on after the last complete row."""
    if not str(spec).startswith("bson:"):
        raise CatalensError(f"--submission needs a BSON dump, e.g. bson:test.bson (got {spec})")
    started = time.perf_counter()
    leaves = leaf_ids(model)
    fallback = int(leaves[np.argmax([model.card.data.get("train_per_class", {}).get(name, 0)
                                     for name in model.classes])])
    path = Path(spec[len("bson:"):]).expanduser()
    index = open_index(path)
    records = index.records
    usable = usable_products(records, labelled=False)
    ids = records["id"]
    out = Path(out)
    done = completed_rows(out, ids)
    if done == 0:
        out.write_text(SUBMISSION_HEADER + "\n")
    unreadable: list[str] = []
    unreadable_file = out.with_name(out.name + ".unreadable.txt")
    if done == 0:
        unreadable_file.unlink(missing_ok=True)
    with open(out, "a") as handle, make_progress() as bar:
        task = bar.add_task("products", total=len(ids), completed=done)
        for start in range(done, len(ids), chunk_products):
            stop = start + chunk_products
            chunk = ids[start:stop].astype(str)
            catalog = image_catalog(path, records[start:stop][usable[start:stop]])
            best = {}
            if len(catalog):
                result = predict_catalog(model, catalog, batch_size, workers, description="", show_progress=False)
                if len(result.rows):
                    products, mean, _ = average_by_product(catalog.table["product_id"].to_numpy()[result.rows],
                                                           result.probabilities)
                    best = dict(zip(products, leaves[mean.argmax(1)]))
            missing = [product for product in chunk if product not in best]
            if missing:  # listed as they happen, so a resumed run keeps the earlier ones
                with open(unreadable_file, "a") as listing:
                    listing.write("".join(f"{product}\n" for product in missing))
            unreadable += missing
            handle.write("".join(f"{product},{best.get(product, fallback)}\n" for product in chunk))
            handle.flush()
            bar.update(task, completed=start + len(chunk))
    if unreadable:
        warn(f"{len(unreadable)} product(s) had no readable image; they were given the most frequent training "
             f"category {fallback}: {', '.join(unreadable[:10])}{' ...' if len(unreadable) > 10 else ''} "
             f"(all listed in {unreadable_file})")
    return SubmissionSummary(str(out), len(ids), len(ids) - done, done, unreadable, time.perf_counter() - started)


