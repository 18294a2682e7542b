"""`catalens shard DATA --out DIR --size 1GB`: any catalog as WebDataset-style tar shards (sources/shards.py
describes the layout), the documented route for catalogs that live in object storage.

Each image goes in with its original bytes where the source keeps them (files, BSON pictures); in-memory
images (Fashion-MNIST) and readers without bytes are stored as lossless PNG. An image that cannot be read is
left out with a warning, counted and listed in DIR/problems.csv.
"""

from __future__ import annotations

import csv
import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

from catalens.data import DataOptions, load_catalog
from catalens.data.bson_generate import parse_size
from catalens.data.identity import image_bytes
from catalens.data.images import describe_failure
from catalens.data.sources.shards import FORMAT, INDEX_FILE, META_FILE
from catalens.errors import CatalensError
from catalens.files import PROBLEMS_FILE
from catalens.progress import make_progress, warn

INDEX_COLUMNS = ["item_id", "product_id", "label", "split", "title", "description", "shard", "offset", "size", "ext"]


@dataclass
class ShardSummary:
    out: Path
    shards: int
    items: int
    bytes: int
    problems: int


def write_shards(data: str, out: str | Path, size: str | int = "1GB",
                 options: DataOptions | None = None) -> ShardSummary:
    limit = parse_size(size)
    if not limit or limit < 1024:
        raise CatalensError(f"--size {size}: give a shard size such as 1GB or 256MB")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise CatalensError(f"{out} is not empty; choose a new --out folder for the shards")
    out.mkdir(parents=True, exist_ok=True)
    catalog = load_catalog(data, options, split=False)
    table = catalog.table.reset_index(drop=True)
    width = max(6, len(str(len(table))))
    # files the listing already left out (zero-byte) are not in the shards either: list them with the rest
    problems = [(str(problem["ref"]), str(problem["reason"])) for problem in catalog.left_out_files()]
    shards, rows, written = [], [], 0
    archive = None

    def next_shard():
        nonlocal archive
        if archive is not None:
            archive.close()
        shards.append(f"shard-{len(shards):06d}.tar")
        archive = tarfile.open(out / shards[-1], "w", format=tarfile.GNU_FORMAT)

    next_shard()
    try:
        with make_progress() as bar:
            task = bar.add_task("sharding", total=len(table))
            for i, row in enumerate(table.itertuples(index=False)):
                bar.advance(task)
                try:
                    data, ext = image_bytes(catalog, row.ref)
                except Exception as error:  # noqa: BLE001 - one bad image is a listed problem, not a crash
                    problems.append((str(row.ref), describe_failure(error)))
                    continue
                if archive.offset > 0 and archive.offset + len(data) > limit:
                    next_shard()
                key = f"{i:0{width}d}"
                meta = json.dumps({"item_id": str(row.item_id), "product_id": str(row.product_id),
                                   "label": row.label, "split": row.split, "title": row.title,
                                   "description": row.description}, ensure_ascii=False).encode()
                image_info = tarfile.TarInfo(f"{key}.{ext}")
                image_info.size = len(data)
                offset = archive.offset + 512  # the member's data follows its 512-byte header
                archive.addfile(image_info, io.BytesIO(data))
                meta_info = tarfile.TarInfo(f"{key}.json")
                meta_info.size = len(meta)
                archive.addfile(meta_info, io.BytesIO(meta))
                rows.append([str(row.item_id), str(row.product_id), row.label, row.split, row.title, row.description,
                             len(shards) - 1, offset, len(data), ext])
                written += len(data)
    finally:
        archive.close()
    with (out / INDEX_FILE).open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(INDEX_COLUMNS)
        writer.writerows(rows)
    (out / META_FILE).write_text(json.dumps({
        "format": FORMAT, "source": catalog.source, "classes": catalog.classes, "channels": catalog.channels,
        "native_size": list(catalog.native_size) if catalog.native_size else None, "shards": shards,
        "items": len(rows), "hierarchy": catalog.hierarchy, "level": catalog.level}, indent=2))
    if problems:
        with (out / PROBLEMS_FILE).open("w", newline="") as handle:
            csv.writer(handle).writerows([("ref", "reason"), *problems])
        warn(f"{len(problems)} image(s) could not be read and were left out; listed in {out / PROBLEMS_FILE}")
    return ShardSummary(out, len(shards), len(rows), written, len(problems))
