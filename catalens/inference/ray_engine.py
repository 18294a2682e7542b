"""`catalens predict ... --engine ray`: batch prediction on Ray Data, on this machine or a cluster.

The catalog becomes a Ray Dataset of references, one row per product (one per image when products have one
image): its image refs (paths, URLs, BSON offsets, array indices), never the pixels. Two stages:
- decoding and resizing, a CPU `map_batches` stage: each product's images as one uint8 array;
- the model, in a pool of actors (onnxruntime on CPU, torch on GPU with `--gpus-per-actor`), which averages a
  product's images and returns its output record (top-k, level names) and the images it could not read.
The driver only gathers the small records, in the catalog's order, and writes them like the single-process path.

Ray is an extra: pip install 'catalens[ray]'.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pandas as pd

from catalens.data.catalog import ArrayReader, Catalog
from catalens.data.images import describe_failure
from catalens.errors import CatalensError
from catalens.inference.products import catalog_has_products
from catalens.progress import info

CONNECT_TIMEOUT_S = 10


def import_ray():
    try:
        import ray
        import ray.data
    except ImportError:
        raise CatalensError("--engine ray needs Ray: pip install 'catalens[ray]'") from None
    return ray


def connect(ray, address: str | None, cpus: int | None = None) -> None:
    """A local Ray when no address is given; else the cluster at `address` (auto, HOST:PORT or ray://HOST:PORT),
    checked with a plain TCP connection first so that an unreachable one is a one-line error in seconds."""
    import logging

    from catalens.progress import bars_enabled

    ray.data.DataContext.get_current().enable_progress_bars = bars_enabled()
    if not bars_enabled():  # its progress would otherwise be logged line by line
        logging.getLogger("ray.data").setLevel(logging.ERROR)
    if ray.is_initialized():
        return
    quiet = {"include_dashboard": False, "log_to_driver": False, "logging_level": "ERROR"}
    if address is None:
        ray.init(num_cpus=cpus or os.cpu_count(), **quiet)
        return
    if address != "auto":
        parsed = urlparse(address if "://" in address else f"tcp://{address}")
        if not parsed.hostname or not parsed.port:
            raise CatalensError(f"--ray-address {address}: give auto, HOST:PORT or ray://HOST:PORT")
        try:
            socket.create_connection((parsed.hostname, parsed.port), timeout=CONNECT_TIMEOUT_S).close()
        except OSError as error:
            raise CatalensError(f"cannot reach the Ray cluster at {address} ({error.strerror or error}); start one "
                                "with `ray start --head`, or leave out --ray-address for a local Ray") from None
    try:
        ray.init(address=address, **{key: value for key, value in quiet.items() if key != "include_dashboard"})
    except ConnectionError as error:
        raise CatalensError(f"cannot reach the Ray cluster at {address} ({str(error).splitlines()[0][:200]}); "
                            "start one with `ray start --head`, or leave out --ray-address for a local Ray") from None


def product_groups(catalog: Catalog, per_product: bool) -> pd.DataFrame:
    """One row per product in order of first appearance: its refs, and the name and id its output row shows
    (the product id; or, per image, the ref and the item id)."""
    table = catalog.table.reset_index(drop=True)
    keys = table["product_id"] if per_product else pd.Series(np.arange(len(table)))
    codes, _ = pd.factorize(keys, sort=False)
    frame = pd.DataFrame({"order": codes, "ref": table["ref"].map(encode_ref),
                          "name": (table["product_id"] if per_product else table["ref"]).astype(str),
                          "item": table["item_id"].astype(str)})
    grouped = frame.groupby("order", sort=True)
    return pd.DataFrame({"order": np.arange(grouped.ngroups), "refs": grouped["ref"].agg(list).tolist(),
                         "name": grouped["name"].first().tolist(), "item": grouped["item"].first().tolist()})


def encode_ref(ref) -> str:
    """Refs travel as JSON text: Arrow then never has to guess a type for a column of paths, ints or tuples."""
    return json.dumps(ref.item() if hasattr(ref, "item") else ref)


class Decoder:
    """The CPU stage: a batch of products -> each product's images, uint8 (n, C, H, W), and its failures."""

    def __init__(self, reader, arrays: list, preprocessing):
        import ray

        # in-memory sources: the array travels once, as a reference in a list, fetched here
        self.reader = ArrayReader(ray.get(arrays[0])) if arrays else reader
        self.preprocessing = preprocessing

    def __call__(self, batch: dict) -> dict:
        images = np.empty(len(batch["order"]), dtype=object)
        failures = []
        height, width = self.preprocessing.input_size
        for i, refs in enumerate(batch["refs"]):
            good, bad = [], []
            for text in refs:
                ref = json.loads(text)
                try:
                    good.append(self.preprocessing.prepare(self.reader.read(ref)).numpy())
                except Exception as error:  # noqa: BLE001 - a bad image is reported, never fatal
                    bad.append([ref, describe_failure(error)])
            images[i] = np.stack(good) if good else np.zeros((0, self.preprocessing.channels, height, width),
                                                             np.uint8)
            failures.append(json.dumps(bad))
        return {"order": batch["order"], "name": batch["name"], "item": batch["item"], "images": images,
                "failures": np.array(failures)}


class Predictor:
    """The model stage, one model per actor: a product's images averaged, its output record as JSON."""

    def __init__(self, model_path: str, backend: str, k: int, with_ids: bool, per_product: bool,
                 min_confidence: float | None = None):
        from catalens.rundir.run import Model

        self.model = Model.load(model_path, backend=backend)
        self.k, self.with_ids, self.per_product, self.min_confidence = k, with_ids, per_product, min_confidence

    def __call__(self, batch: dict) -> dict:
        import torch

        from catalens.inference.records import finish_records, prediction_records

        counts = [len(images) for images in batch["images"]]
        stacked = [images for images in batch["images"] if len(images)]
        targets = {}
        if stacked and self.model.targets is not None:  # a --targets run: every target from one backbone pass
            scaled, targets = self.model.target_probabilities(torch.from_numpy(np.concatenate(stacked)))
            probabilities = self.model.finish_probabilities(scaled)
        else:
            probabilities = self.model.probabilities(torch.from_numpy(np.concatenate(stacked))) if stacked else None
        records, start = [], 0
        for name, item, count in zip(batch["name"], batch["item"], counts):
            if not count:
                records.append("")
                continue
            def mean(values, first=start, count=count):  # the product's images averaged, as products.py does
                return values[first:first + count].astype(np.float64).mean(axis=0).astype(np.float32)[None]

            start += count
            record = prediction_records(self.model, [name], [item] if self.with_ids else None, mean(probabilities),
                                        self.k, [count] if self.per_product else None)
            finish_records(record, self.model, {target: mean(values) for target, values in targets.items()}, self.k,
                           self.min_confidence)
            records.append(json.dumps(record[0]))
        return {"order": batch["order"], "record": np.array(records, dtype=object), "failures": batch["failures"]}


def predict_with_ray(model_path: str | Path, model, catalog: Catalog, k: int, backend: str, batch_size: int,
                     address: str | None, actors: int | None, gpus_per_actor: float,
                     min_confidence: float | None = None) -> tuple[list[dict], list, dict]:
    """(records in catalog order, failures (ref, reason), summary) for every product of the catalog. `model` is
    the loaded model (for its preprocessing); each actor loads its own from `model_path`."""
    ray = import_ray()
    started = time.perf_counter()
    connect(ray, address)
    ready = time.perf_counter() - started
    per_product = catalog_has_products(catalog)
    table = catalog.table.reset_index(drop=True)
    refs, items = table["ref"].astype(str).tolist(), table["item_id"].astype(str).tolist()
    with_ids = not per_product and refs != items
    groups = product_groups(catalog, per_product)
    cpus = int(ray.cluster_resources().get("CPU", 1))
    actors = actors or max(1, cpus // 2)
    if gpus_per_actor and not ray.cluster_resources().get("GPU"):
        raise CatalensError(f"--gpus-per-actor {gpus_per_actor}: the Ray cluster has no GPU; leave it out to run "
                            "the model on CPUs")
    backend_in_actor = "torch" if gpus_per_actor else ("onnx" if backend == "auto" else backend)
    arrays = [ray.put(catalog.arrays)] if catalog.arrays is not None else []
    blocks = max(1, min(len(groups), 4 * cpus))
    step = -(-len(groups) // blocks)
    dataset = ray.data.from_pandas([groups.iloc[i:i + step] for i in range(0, len(groups), step)])
    rows_per_batch = max(1, batch_size // max(1, int(np.mean([len(r) for r in groups["refs"]]))))
    reader = None if arrays else catalog.reader  # an ArrayReader would carry the whole array in the arguments
    decoded = dataset.map_batches(Decoder, fn_constructor_args=(reader, arrays, model.preprocessing),
                                  batch_size=rows_per_batch, compute=ray.data.ActorPoolStrategy(min_size=1,
                                                                                                max_size=cpus),
                                  num_cpus=1)
    predicted = decoded.map_batches(Predictor, fn_constructor_args=(str(model_path), backend_in_actor, k, with_ids,
                                                                    per_product, min_confidence),
                                    batch_size=rows_per_batch, compute=ray.data.ActorPoolStrategy(size=actors),
                                    num_gpus=gpus_per_actor or None, num_cpus=0 if gpus_per_actor else 1)
    info(f"Ray: {len(groups):,} {'products' if per_product else 'images'} over {cpus} CPUs, {actors} model "
         f"actor(s) ({backend_in_actor})")
    outputs = sorted(predicted.iter_rows(), key=lambda row: row["order"])
    records, failures = [], []
    for row in outputs:
        if row["record"]:
            records.append(json.loads(row["record"]))
        failures += [tuple(item) for item in json.loads(row["failures"])]
    if per_product:
        item_of_ref = dict(zip(refs, items))
        failures = [(item_of_ref.get(str(ref), ref), reason) for ref, reason in failures]
    seconds = time.perf_counter() - started
    return records, failures, {"seconds": seconds, "startup_s": ready, "with_ids": with_ids,
                               "per_product": per_product}
