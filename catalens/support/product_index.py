"""A product index: the catalog's image features and titles, for `POST /v1/match` ("which of my products is this
photo / title?") and `catalens match index`.

    catalens match index DATA --run RUN --out INDEX          # build
    catalens match index MORE --run RUN --out INDEX --add    # add items, nothing recomputed
    catalens serve RUN --match-index INDEX                     # POST /v1/match

INDEX holds index.json (the model it was built with, by weights sha256, and the title vocabulary), features.npy
(one unit-length image feature row per item, the backbone's pooled features: the image embedding) and items.csv
(item_id, product_id, label, title, has_image). Adding appends rows to both files and leaves the rest as it is;
titles added later are read with the first build's vocabulary (terms it never saw count for nothing). An item
whose image cannot be read is indexed by its title and flagged (has_image 0).

A query's score per item is the cosine of the image features, the cosine of the titles (TF-IDF over words and
characters, text.TitleVectorizer), or their mean when the query and the item have both; each product is
answered once, by its best item.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from catalens.errors import CatalensError
from catalens.files import atomic_path, write_atomic

INDEX_FILE = "index.json"
FEATURES_FILE = "features.npy"
ITEMS_FILE = "items.csv"
ITEM_COLUMNS = ["item_id", "product_id", "label", "title", "has_image"]


@dataclass
class ProductIndex:
    folder: Path
    meta: dict
    items: pd.DataFrame
    features: np.ndarray  # (N, D) unit rows; zeros for an item without an image
    vectorizer: object  # text.TitleVectorizer
    titles: object  # its rows for the items' titles (scipy CSR)

    def __len__(self) -> int:
        return len(self.items)

    def query(self, features: np.ndarray | None, title: str | None, k: int = 5) -> list[dict]:
        """The k nearest products of one query (image features (D,) and/or a title)."""
        from catalens.models.neighbours import unit_rows
        from catalens.models.text import clean_title

        title = clean_title(title) if title else ""
        if features is None and not title:
            raise CatalensError("a match query needs an image, a title, or both")
        n = len(self.items)
        has_image = self.items["has_image"].to_numpy(bool)
        has_title = self.items["title"].astype(str).str.len().to_numpy() > 0
        image = np.zeros(n, np.float32)
        text = np.zeros(n, np.float32)
        if features is not None:
            image = self.features @ unit_rows(np.asarray(features)[None])[0]
        if title:
            text = np.asarray(self.titles @ self.vectorizer.transform([title]).T.toarray()).ravel() / 2
        both = (features is not None) & has_image & bool(title) & has_title
        score = np.where(both, (image + text) / 2, image if features is not None else text)
        if features is not None and title:  # an item with only one of the two is scored on that one
            score = np.where(~has_image & has_title, text, score)
            score = np.where(has_image & ~has_title, image, score)
        order = np.argsort(-score)
        seen, found = set(), []
        products = self.items["product_id"].astype(str).to_numpy()
        for row in order:
            if products[row] in seen:
                continue
            seen.add(products[row])
            item = self.items.iloc[row]
            found.append({"item_id": str(item["item_id"]), "product_id": str(item["product_id"]),
                          "label": str(item["label"]), "title": str(item["title"]),
                          "score": round(float(score[row]), 4),
                          "image_score": round(float(image[row]), 4) if features is not None and has_image[row]
                          else None,
                          "title_score": round(float(text[row]), 4) if title and has_title[row] else None})
            if len(found) >= k:
                break
        return found


def load_index(folder: str | Path) -> ProductIndex:
    from catalens.models.text import TitleVectorizer

    folder = Path(folder)
    if not (folder / INDEX_FILE).is_file():
        raise CatalensError(f"no product index at {folder}: build one with `catalens match index DATA --run RUN "
                            f"--out {folder}`")
    try:
        meta = json.loads((folder / INDEX_FILE).read_text())
        items = pd.read_csv(folder / ITEMS_FILE, dtype=str, keep_default_na=False)
        items["has_image"] = items["has_image"].astype(int)
        features = np.load(folder / FEATURES_FILE, mmap_mode="r", allow_pickle=False)
        vectorizer = TitleVectorizer.from_state(meta["vocabularies"], {key: np.asarray(value, np.float64)
                                                                       for key, value in meta["idf"].items()})
    except (OSError, ValueError, KeyError) as error:
        raise CatalensError(f"cannot read the product index {folder} ({str(error)[:100]}); build it again") from error
    count = int(meta.get("items", len(items)))
    if len(features) < count or len(items) < count:
        raise CatalensError(f"the product index {folder} is damaged ({len(features)} feature rows and {len(items)} "
                            f"items for {count}); build it again")
    items, features = items.iloc[:count].reset_index(drop=True), features[:count]
    titles = vectorizer.transform(items["title"].astype(str).tolist())
    return ProductIndex(folder, meta, items, np.asarray(features), vectorizer, titles)


def model_digest(model) -> str:
    from catalens.checksums import file_digest

    return file_digest(model.weights_path)


def build_index(data: str, model_dir: str | Path, out: str | Path, add: bool = False, batch_size: int = 64,
                options=None) -> dict:
    """Index (or, with `add`, add to the index) every item of DATA; returns counts."""
    from catalens.data import load_catalog
    from catalens.models.fusion import catalog_texts
    from catalens.models.neighbours import unit_rows
    from catalens.models.text import TitleVectorizer
    from catalens.progress import warn
    from catalens.rundir.run import Model
    from catalens.support.embeddings import embed

    out = Path(out)
    model = Model.load(model_dir)
    if model.module is None:
        raise CatalensError(f"{model_dir} is an exported ONNX file: index with the run directory (the backbone's "
                            "features are read from it)")
    existing = None
    if add:
        existing = load_index(out)
        if existing.meta["weights_sha256"] != model_digest(model):
            raise CatalensError(f"{out} was built with another model ({existing.meta['model']}): add with that one, "
                                "or build a new index")
    elif out.exists() and any(out.iterdir()):
        raise CatalensError(f"{out} already exists and is not empty: add to it with --add, or choose another --out")
    catalog = load_catalog(data, options, split=False)
    if existing is not None:
        known = set(existing.items["item_id"].astype(str))
        fresh = ~catalog.table["item_id"].astype(str).isin(known)
        skipped = int((~fresh).sum())
        catalog = catalog.subset(fresh.to_numpy().nonzero()[0])
    else:
        skipped = 0
    titles = catalog_texts(catalog.table, ["title"])
    width = existing.features.shape[1] if existing is not None else 0
    matrix, readable = np.zeros((0, width), np.float32), np.zeros(0, bool)
    if len(catalog):  # embeddings.embed: the audit's batch loop, failures kept; unreadable rows stay zero
        with tempfile.TemporaryDirectory(prefix="catalens-index-") as folder:
            embedded = embed(catalog, model.module, model.preprocessing, str(model_dir), Path(folder) / FEATURES_FILE,
                             batch_size)
            matrix, readable = unit_rows(np.asarray(embedded.features)) * embedded.readable[:, None], embedded.readable
    items = pd.DataFrame({key: catalog.table[key].astype(str).to_numpy() for key in ("item_id", "product_id", "label")})
    items["title"] = titles
    items["has_image"] = readable.astype(np.int64)
    flagged = int((items["has_image"] == 0).sum())
    out.mkdir(parents=True, exist_ok=True)
    if existing is None:
        vectorizer = TitleVectorizer.fit(titles)
        vocabularies, arrays = vectorizer.state()
        meta = {"model": str(Path(model_dir).resolve()), "weights_sha256": model_digest(model),
                "vocabularies": vocabularies, "idf": {key: value.tolist() for key, value in arrays.items()},
                "sources": [data]}
        all_items, all_features = items, matrix
    else:
        meta = dict(existing.meta, sources=existing.meta.get("sources", []) + [data])
        all_items = pd.concat([existing.items, items], ignore_index=True)
        all_features = np.concatenate([existing.features, matrix])
    # index.json last: its item count is what a reader trusts, so an add killed half way leaves the index as it was
    write_with(out / FEATURES_FILE, lambda handle: np.save(handle, all_features, allow_pickle=False))
    write_with(out / ITEMS_FILE, lambda handle: all_items[ITEM_COLUMNS].to_csv(handle, index=False))
    meta["items"] = len(all_items)
    write_atomic(out / INDEX_FILE, json.dumps(meta, ensure_ascii=False))
    if flagged:
        warn(f"{flagged} image(s) could not be read: indexed by their title alone (has_image 0 in {ITEMS_FILE})")
    return {"added": len(items), "skipped_known": skipped, "title_only": flagged, "items": len(all_items),
            "index": str(out)}


def write_with(path: Path, write) -> None:
    """`write(handle)` into `path`, all of it or none."""
    with atomic_path(path) as temporary, open(temporary, "wb") as handle:
        write(handle)
