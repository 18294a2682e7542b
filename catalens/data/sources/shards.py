"""`shards:DIR` (or `shards:s3://bucket/dir`, any fsspec URL): a catalog written by `catalens shard` as
WebDataset-style tar shards, read back as a source.

DIR holds `shard-000000.tar`, ... (each sample is `KEY.jpg|png|...` with its image's original bytes and
`KEY.json` with its item id, product, label, split, title and description; KEY is the catalog row, zero-padded),
`index.csv` (one row per sample: the catalog's columns, the shard, the byte offset and size of the image member)
and `shards.json` (classes, source, channels, the category tree). WebDataset and any tar reader can stream the
shards in order; catalens reads single images by offset, so DDP ranks and Ray workers each read their own rows
in parallel, locally or from object storage.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd
from PIL import Image

from catalens.data.catalog import Catalog
from catalens.data.images import load_image
from catalens.errors import CatalensError

INDEX_FILE, META_FILE = "index.csv", "shards.json"
FORMAT = "catalens-shards/1"


def is_remote(location: str) -> bool:
    return "://" in location


def open_location(location: str, name: str, mode: str = "rb"):
    """A file of the shard set: a local path, or through fsspec for URLs (s3://, gs://, http(s)://, ...)."""
    if not is_remote(location):
        return open(Path(location) / name, mode)
    try:
        import fsspec
    except ImportError:
        raise CatalensError(f"reading shards from {location} needs fsspec (and its driver, e.g. s3fs): "
                            "pip install fsspec s3fs") from None
    return fsspec.open(f"{location.rstrip('/')}/{name}", mode).open()


class ShardReader:
    """Reads one image by (shard, offset, size): a seek and a read, no scan of the tar. Picklable (paths only);
    each process opens its own files."""

    def __init__(self, location: str, shards: list[str], channels: int = 3):
        self.location, self.shards, self.channels = location, shards, channels
        self._files: dict[int, object] = {}

    def __getstate__(self):
        return {**self.__dict__, "_files": {}}

    def raw(self, ref: str) -> bytes:
        shard, offset, size = (int(part) for part in str(ref).split(":"))
        handle = self._files.get(shard)
        if handle is None:
            handle = self._files[shard] = open_location(self.location, self.shards[shard])
        handle.seek(offset)
        data = handle.read(size)
        if len(data) != size:
            raise OSError(f"shard {self.shards[shard]} ends before byte {offset + size}: truncated")
        return data

    def read(self, ref) -> Image.Image:
        image = load_image(io.BytesIO(self.raw(ref)))
        return image.convert("L") if self.channels == 1 else image  # grey sources stay grey


def open_shards(rest: str, **_) -> Catalog:
    location = rest.rstrip("/") or "."
    if not is_remote(location) and not (Path(location) / META_FILE).is_file():
        raise CatalensError(f"shards:{location}: no {META_FILE} there; write shards with "
                            "`catalens shard DATA --out DIR`")
    try:
        with open_location(location, META_FILE) as handle:
            meta = json.load(handle)
        with open_location(location, INDEX_FILE) as handle:
            index = pd.read_csv(handle, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as error:
        raise CatalensError(f"shards:{location}: cannot read {META_FILE}/{INDEX_FILE} ({error})") from None
    if meta.get("format") != FORMAT:
        raise CatalensError(f"shards:{location}: format {meta.get('format')!r}, expected {FORMAT}")
    refs = (index["shard"] + ":" + index["offset"] + ":" + index["size"]).tolist()
    catalog = Catalog.from_records(
        {"item_id": index["item_id"].tolist(), "product_id": index["product_id"].tolist(), "ref": refs,
         "label": index["label"].tolist(), "split": index["split"].tolist(), "title": index["title"].tolist(),
         "description": index["description"].tolist()},
        classes=meta["classes"], source=f"shards:{location}",
        reader=ShardReader(location, meta["shards"], meta.get("channels", 3)),
        channels=meta.get("channels", 3),
        native_size=tuple(meta["native_size"]) if meta.get("native_size") else None,
        hierarchy=meta.get("hierarchy"), level=meta.get("level"),
    )
    catalog.notes.append(f"{len(meta['shards'])} shard(s) written from {meta.get('source', '?')}")
    return catalog
