"""`catalens export RUN --int8`: quantize the run's network to int8 (models/quantize.py), calibrated on photos of
its training split, and keep it only when its accuracy on the validation split is within `TOLERANCE` of
float32's. The outcome goes in the card (`int8`); predict, sort, evaluate and serve then load RUN/model.int8.onnx
on the onnxruntime backend. When int8 loses more than the tolerance, or onnxruntime cannot quantize the graph, the
float model is kept and the card says why."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np

from catalens.data.splits import stratified_sample
from catalens.errors import CatalensError
from catalens.loading.batches import make_batches
from catalens.loading.preprocess import normalize_numpy
from catalens.models.onnx_backend import OnnxRunner
from catalens.models.quantize import quantize_int8, set_card
from catalens.progress import info, make_progress, warn
from catalens.report.evaluate import evaluation_catalog
from catalens.rundir.layout import CARD_FILE, INT8_FILE, ONNX_FILE
from catalens.rundir.run import Model, export_weights, write_json

TOLERANCE = 0.005  # int8 may lose at most half a point of validation accuracy against float32
CALIBRATION_PHOTOS = 200  # training photos that set the activation ranges (MinMax)
MAX_CHECK_PHOTOS = 5000  # the validation check reads at most this many photos (a stratified sample)


def check_int8(run_dir: str | Path, data: str | None = None, tolerance: float = TOLERANCE,
               calibration_photos: int = CALIBRATION_PHOTOS) -> dict:
    """Quantize, check on validation, record in the card; returns the card's `int8` entry."""
    run_dir = Path(run_dir)
    if not 0 <= tolerance < 1:
        raise CatalensError(f"--tolerance {tolerance} must be a fraction of accuracy between 0 and 1, e.g. 0.005")
    model = Model.load(run_dir, backend="torch", device="cpu")
    if model.text is not None:
        raise CatalensError(f"{run_dir} also reads text (--text); int8 export covers image-only models")
    if model.targets is not None:
        raise CatalensError(f"{run_dir} has several targets (--targets/--tags); int8 export covers one-label models")
    spec = data or model.card.data.get("spec")
    if not spec:
        raise CatalensError(f"{run_dir}'s card does not say what it was trained on; give --data DATA")
    catalog, _, training_data = evaluation_catalog(model, spec, None)
    if not training_data or not catalog.has_split("val") or not catalog.has_split("train"):
        raise CatalensError(f"{spec} is not the data {run_dir} was trained on (or it has no validation split): "
                            "the int8 check needs the run's own train and validation photos; give --data DATA")
    calibration = normalised(stratified_sample(catalog.split("train"), calibration_photos, seed=0), model,
                             "int8 calibration photos")
    record = {"tolerance": tolerance, "calibration_photos": len(calibration), "method": (
        "onnxruntime static quantization, QDQ: int8 weights per channel, uint8 activations, MinMax ranges")}
    target = run_dir / INT8_FILE
    target.unlink(missing_ok=True)  # an earlier int8 file is not trusted past a new check
    with tempfile.TemporaryDirectory(prefix="catalens-int8-") as folder:
        float_path, candidate = Path(folder) / ONNX_FILE, Path(folder) / INT8_FILE
        export_weights(model.module, model.card, model.weights_path, float_path)
        try:
            quantize_int8(float_path, candidate, calibration)
        except CatalensError as error:
            record |= {"status": "float kept", "why": str(error)}
            return keep(run_dir, model, record, target)
        val = stratified_sample(catalog.split("val"), MAX_CHECK_PHOTOS, seed=0)
        labels, float_logits, int8_logits = compare(model, val, OnnxRunner(float_path), OnnxRunner(candidate))
        shutil.copyfile(candidate, target)  # checked: only now next to the run's other files
    float_pred, int8_pred = float_logits.argmax(1), int8_logits.argmax(1)
    float_accuracy, int8_accuracy = float((float_pred == labels).mean()), float((int8_pred == labels).mean())
    record |= {"float32_accuracy": round(float_accuracy, 4), "int8_accuracy": round(int8_accuracy, 4),
               "agreement": round(float((float_pred == int8_pred).mean()), 4), "validation_photos": int(len(labels))}
    if int8_accuracy >= float_accuracy - tolerance:
        record |= {"status": "used", "why": f"validation accuracy {int8_accuracy:.4f} against float32 "
                                            f"{float_accuracy:.4f}: within the {tolerance:g} tolerance"}
    else:
        record |= {"status": "float kept", "why": f"int8 validation accuracy {int8_accuracy:.4f} is more than "
                                                  f"{tolerance:g} below float32's {float_accuracy:.4f}"}
    return keep(run_dir, model, record, target)


def keep(run_dir: Path, model: Model, record: dict, target: Path) -> dict:
    """Write the outcome into the card (and into the int8 file's own card); remove an int8 file not used."""
    model.card.int8 = record
    write_json(run_dir / CARD_FILE, model.card.to_dict())
    if record["status"] == "used":
        runner = OnnxRunner(target)
        set_card(target, dict(runner.card or {}, int8=record, precision="int8"))
        info(f"int8: used ({record['why']}; predictions agree on {record['agreement']:.1%}); {target}")
    else:
        target.unlink(missing_ok=True)
        warn(f"int8: float model kept: {record['why']}")
    return record


def normalised(catalog, model: Model, what: str) -> np.ndarray:
    """The catalog's photos at the model's input, normalised as the network takes them (failures skipped)."""
    parts = []
    for batch in progress(make_batches(catalog, model.preprocessing, batch_size=32), what):
        if len(batch.labels):
            parts.append(normalize_numpy(batch.images.numpy(), model.preprocessing))
    return np.concatenate(parts) if parts else np.zeros((0,), np.float32)


def compare(model: Model, catalog, float_runner: OnnxRunner, int8_runner: OnnxRunner):
    """(labels, float32 logits, int8 logits) over the catalog's readable labelled photos."""
    labels, float_logits, int8_logits = [], [], []
    for batch in progress(make_batches(catalog, model.preprocessing, batch_size=32), "int8 check (validation)"):
        keep_rows = batch.labels >= 0
        if keep_rows.any():
            images = normalize_numpy(batch.images[keep_rows].numpy(), model.preprocessing)
            labels.append(batch.labels[keep_rows].numpy())
            float_logits.append(float_runner.run(images))
            int8_logits.append(int8_runner.run(images))
    if not labels:
        raise CatalensError("the validation split has no readable labelled photos to check int8 on")
    return np.concatenate(labels), np.concatenate(float_logits), np.concatenate(int8_logits)


def progress(batches, description: str):
    with make_progress() as bar:
        task = bar.add_task(description, total=len(batches))
        for batch in batches:
            yield batch
            bar.advance(task)

