"""Batched inference over a Catalog, and `catalens predict` over files, folders or a data spec."""

from __future__ import annotations

import sys
import time
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from catalens.data import DataOptions, load_catalog
from catalens.data.catalog import Catalog
from catalens.data.images import is_image_file
from catalens.data.sources import source_prefix
from catalens.data.sources.folder import FileReader, walk_files
from catalens.errors import CatalensError
from catalens.inference.products import average_by_product, catalog_has_products
from catalens.inference.records import (
    failure_records,
    finish_records,
    prediction_records,
    write_parquet,
    write_records,
)
from catalens.loading.batches import each_batch, make_batches
from catalens.loading.preprocess import softmax_numpy
from catalens.models.calibration import answered
from catalens.models.fusion import catalog_texts, read_text_columns
from catalens.progress import warn
from catalens.rundir.run import Model


@dataclass
class Predictions:
    probabilities: np.ndarray  # (N_ok, classes)
    rows: np.ndarray  # catalog row of each prediction
    failures: list[tuple[str, str]] = field(default_factory=list)  # (ref, reason)
    seconds: float = 0.0
    # a --text model: each head's logits over the rows with an image (the first len(heads["image"]) rows), and the
    # unreadable images that were predicted from their text alone (ref, reason)
    heads: dict[str, np.ndarray] = field(default_factory=dict)
    text_only: list[tuple[str, str]] = field(default_factory=list)
    # softmax(logits / temperature), before the top-label map (evaluate's calibration report reads it)
    scaled: np.ndarray | None = None
    targets: dict[str, np.ndarray] = field(default_factory=dict)  # a --targets run: each target's probabilities

    @property
    def images_per_s(self) -> float:
        return len(self.rows) / self.seconds if self.seconds else 0.0


def predict_catalog(model: Model, catalog: Catalog, batch_size: int = 512, workers: int | None = None,
                    description: str = "predicting", show_progress: bool = True) -> Predictions:
    """Class probabilities for every readable image in the catalog, timed end to end (decoding included). A
    --text model also reads each row's text, and predicts the rows whose image cannot be read from the text."""
    started = time.perf_counter()
    texts = catalog_texts(catalog.table, model.text_columns) if model.text is not None else None
    batches = make_batches(catalog, model.preprocessing, batch_size, workers=workers)
    probabilities: list[np.ndarray] = []
    rows: list[np.ndarray] = []
    failures: list[tuple[str, str]] = []
    heads: dict[str, list] = {}
    targets: dict[str, list] = {}
    with closing(each_batch(batches, description, len(catalog), failures, show_progress)) as stream:
        for batch in stream:
            if len(batch.rows):
                if texts is not None:
                    logits = model.modal_logits(batch.images, [texts[i] for i in batch.rows.numpy()])
                    for name, value in logits.items():
                        heads.setdefault(name, []).append(value)
                    probabilities.append(softmax_numpy(logits["used"]))
                elif model.targets is not None:
                    scaled, per_target = model.target_probabilities(batch.images)
                    probabilities.append(scaled)
                    for name, value in per_target.items():
                        targets.setdefault(name, []).append(value)
                else:
                    probabilities.append(model.scaled_probabilities(batch.images))
                rows.append(batch.rows.numpy())
    text_only = []
    if texts is not None and failures:  # no image, but a title: the text head answers
        row_of = {str(ref): row for row, ref in enumerate(catalog.table["ref"])}
        rescued = [(ref, reason, row_of.get(str(ref))) for ref, reason in failures]
        rescued = [(ref, reason, row) for ref, reason, row in rescued if row is not None and texts[row]]
        if rescued:
            text_rows = np.array([row for _, _, row in rescued], np.int64)
            probabilities.append(softmax_numpy(model.modal_logits(None, [texts[i] for i in text_rows])["used"]))
            rows.append(text_rows)
            text_only = [(ref, reason) for ref, reason, _ in rescued]
            answered = set(text_only)
            failures = [item for item in failures if item not in answered]
    seconds = time.perf_counter() - started
    by_head = {name: np.concatenate(parts) for name, parts in heads.items()}
    if not probabilities:
        return Predictions(np.zeros((0, len(model.classes)), np.float32), np.zeros(0, np.int64), failures, seconds)
    scaled = np.concatenate(probabilities)
    return Predictions(model.finish_probabilities(scaled), np.concatenate(rows), failures, seconds, by_head, text_only,
                       scaled, {name: np.concatenate(parts) for name, parts in targets.items()})


def catalog_of_inputs(inputs: list[str], split: str | None = None, options: DataOptions | None = None) -> Catalog:
    """Files and folders (searched recursively) as an unlabelled catalog, or a single data spec."""
    paths: list[Path] = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            paths += [p for p in walk_files(path) if is_image_file(p)]
        elif path.is_file():
            paths.append(path)
        elif len(inputs) == 1 and source_prefix(item):
            catalog = load_catalog(item, options, split=False)
            if split:
                if not catalog.has_split(split):
                    raise CatalensError(f"{item} has no {split!r} split")
                catalog = catalog.split(split)
            return catalog
        else:
            raise CatalensError(f"input {item} does not exist")
    if not paths:
        raise CatalensError(f"no image files found in {', '.join(inputs)}")
    return catalog_of_files([path.resolve() for path in paths], ", ".join(inputs))


def catalog_of_files(paths: list[Path], source: str) -> Catalog:
    """Image files as an unlabelled catalog whose refs are the paths as given (absolute ones: read from /)."""
    refs = [str(path) for path in paths]
    return Catalog.from_records({"item_id": refs, "ref": refs}, classes=[], reader=FileReader("/"), source=source)


def predict(model_dir: str | Path, inputs: list[str], k: int = 5, output_format: str = "csv",
            out: str | Path | None = None, batch_size: int = 256, workers: int | None = None,
            split: str | None = None, backend: str = "auto", options: DataOptions | None = None,
            engine: str = "local", ray_address: str | None = None, actors: int | None = None,
            gpus_per_actor: float = 0.0, text: str | None = None, threshold: float | None = None,
            target_accuracy: float | None = None, min_confidence: float | None = None) -> dict:
    """Write top-k predictions for each input image (or product) as CSV, JSON Lines or Parquet; returns a summary.
    `engine="ray"` runs the decoding and the model on Ray Data (ray_engine.py), with the same output. With a
    `threshold` (or a `target_accuracy` that chooses one on the run's validation curve) each row also says whether
    its top probability falls under it (`uncertain`)."""
    if output_format not in ("csv", "jsonl", "parquet"):
        raise CatalensError("--format must be csv, jsonl or parquet")
    if output_format == "parquet" and not out:
        raise CatalensError("--format parquet needs --out FILE.parquet")
    if engine not in ("local", "ray"):
        raise CatalensError(f"--engine {engine}: choose local or ray")
    if min_confidence is not None and not 0 < min_confidence <= 1:
        raise CatalensError(f"--min-confidence {min_confidence:g}: give a probability in (0, 1], e.g. 0.9")
    if engine == "ray":
        from catalens.inference.ray_engine import import_ray

        import_ray()  # before anything is read: a missing extra is the first thing to say
    model = Model.load(model_dir, backend=backend)
    threshold = model.answer_threshold(threshold, target_accuracy)
    catalog = catalog_of_inputs(inputs, split, options)
    read_text_columns(model, text, catalog, ", ".join(inputs))
    if engine == "ray" and model.text is not None:
        raise CatalensError(f"{model_dir} reads text (--text {','.join(model.text_columns)}): the Ray engine predicts "
                            "from images only; use --engine local")
    if engine == "ray":
        from catalens.inference.ray_engine import predict_with_ray

        records, failures, run = predict_with_ray(model_dir, model, catalog, k, backend, batch_size, ray_address,
                                                  actors, gpus_per_actor, min_confidence)
        with_ids, per_product = run["with_ids"], run["per_product"]
        summary = {"predicted": sum(record.get("images", 1) for record in records), "failed": len(failures),
                   "images_per_s": len(catalog) / run["seconds"], "per_product": per_product,
                   "seconds": run["seconds"], "startup_s": run["startup_s"]}
    else:
        result = predict_catalog(model, catalog, batch_size, workers)
        records, failures, with_ids, per_product = output_records(catalog, model, result, k, min_confidence)
        summary = {"predicted": len(result.rows), "failed": len(result.failures),
                   "images_per_s": result.images_per_s, "per_product": per_product, "seconds": result.seconds}
    if threshold is not None:
        if per_product:
            warn("the threshold was chosen on single photos; products average their photos' probabilities, so "
                 "the accuracy it reaches per product may differ")
        for record in records:
            record["uncertain"] = not bool(answered(record["probability"], threshold))
        unsure = sum(record["uncertain"] for record in records)
        summary.update(threshold=threshold, uncertain=unsure, coverage=1 - unsure / max(1, len(records)))
    records += failure_records(failures)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
    if output_format == "parquet":
        if not out:
            raise CatalensError("--format parquet writes a file: give --out FILE.parquet")
        write_parquet(Path(out), records, model, with_ids, per_product)
    else:
        handle = open(out, "w", newline="") if out else sys.stdout
        try:
            write_records(handle, output_format, records, model, with_ids, per_product)
        finally:
            if out:
                handle.close()
    if engine == "local" and result.text_only:
        summary["text_only"] = [ref for ref, _ in result.text_only]
        warn(f"{len(result.text_only)} image(s) could not be read and were predicted from their text alone: "
             + ", ".join(summary["text_only"][:5]) + (" ..." if len(result.text_only) > 5 else ""))
    if failures:
        warn(f"{len(failures)} image(s) could not be read; they are in the output with their error")
    return summary


def write_predictions(handle, output_format: str, catalog: Catalog, model: Model, result: Predictions, k: int):
    """One row per image, or, for a product dump, one per product (its images' probabilities averaged), with
    the category level names of each class when the model knows its tree."""
    records, failures, with_ids, per_product = output_records(catalog, model, result, k)
    write_records(handle, output_format, records + failure_records(failures), model, with_ids, per_product)


def output_records(catalog: Catalog, model: Model, result: Predictions, k: int, min_confidence: float | None = None):
    """(records, failures, with an id column, per product) of a prediction over a catalog."""
    per_product = catalog_has_products(catalog)
    inputs = catalog.table["ref"].astype(str).to_numpy()[result.rows]
    item_ids = catalog.table["item_id"].astype(str).to_numpy()[result.rows]
    with_ids = not per_product and not np.array_equal(item_ids, inputs)  # csv/sql: posting or product id
    probabilities, failures, images, targets = result.probabilities, result.failures, None, result.targets
    if per_product:  # each product's images averaged, for its label and for each target (and tag)
        products = catalog.table["product_id"].to_numpy()[result.rows]
        inputs, probabilities, images = average_by_product(products, probabilities)
        targets = {name: average_by_product(products, values)[1] for name, values in targets.items()}
        item_of_ref = dict(zip(catalog.table["ref"].astype(str), catalog.table["item_id"]))
        failures = [(item_of_ref.get(str(ref), ref), reason) for ref, reason in failures]
    records = prediction_records(model, inputs, item_ids if with_ids else None, probabilities, k, images)
    finish_records(records, model, targets, k, min_confidence)
    return records, failures, with_ids, per_product


