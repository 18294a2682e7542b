"""`catalens evaluate`: an honest report of a model on a data split.

Writes metrics.json, report.md (embedding the PNGs), confusion matrices (counts, row-normalised),
a grid of misclassified examples, and prints a table.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from rich.table import Table

from catalens.data import DataOptions, load_catalog
from catalens.data.catalog import Catalog, source_identity
from catalens.data.provenance import provenance as bootstrap_provenance
from catalens.data.splits import ensure_splits
from catalens.errors import CatalensError
from catalens.inference.predict import Predictions, predict_catalog
from catalens.inference.products import average_by_product, catalog_has_products
from catalens.metrics import per_class_scores, present_mean
from catalens.models.calibration import (
    compact_curve,
    confidence_and_correct,
    coverage_at,
    expected_calibration_error,
    reliability_bins,
    risk_coverage,
)
from catalens.models.fusion import catalog_texts, read_text_columns
from catalens.plots import plot_confusion, plot_examples, plot_reliability, plot_risk_coverage
from catalens.progress import console, info, warn
from catalens.report.targets import target_lines, target_metrics
from catalens.rundir.layout import CARD_FILE, WEIGHTS_FILE
from catalens.rundir.run import Model, write_json


def evaluation_catalog(model: Model, data: str, labels: str | None,
                       overrides: dict | None = None) -> tuple[Catalog, str | None, bool]:
    """The data as training saw it: the card's label mapping and class filters unless --labels is given, and,
    when it is the very data the model was trained on (third value), the same seeded splits, so `test` is
    held out."""
    trained = model.card.data
    options = trained_options(trained)
    if labels is not None:
        options.labels = labels
    for key, value in (overrides or {}).items():  # e.g. --categories on another machine, --sample
        if value is not None:
            setattr(options, key, value)
    catalog = load_catalog(data, options, split=False)
    training_data = is_training_data(catalog, trained)
    if training_data:
        catalog = ensure_splits(catalog, options.split_ratios, seed=options.seed, val_fraction=options.val_fraction,
                                group_by=options.group_by)
    return catalog, options.labels, training_data


def trained_options(trained: dict) -> DataOptions:
    """The DataOptions a run was trained with (its card's `data.options`; keys this version lacks dropped)."""
    saved = trained.get("options", {})
    options = DataOptions(**{key: value for key, value in saved.items() if key in DataOptions.__dataclass_fields__})
    if saved and "group_by" not in saved:  # trained before splits grouped near-identical photos: its own splits
        options.group_by = "photo"
    options.split_ratios = tuple(options.split_ratios)
    return options


def train_split(catalog: Catalog) -> Catalog:
    return catalog.split("train") if catalog.has_split("train") else catalog


def is_training_data(catalog: Catalog, trained: dict) -> bool:
    """Is this the data the model was trained on, however it is spelled or wherever it was copied? The same
    source identity (resolved path, URL without password) or the same content (class names, item ids, labels).
    Cards written before identities were kept compare the resolved source strings."""
    if trained.get("identity") is not None:
        return catalog.identity == trained["identity"] or catalog.content_fingerprint() == trained.get("content")
    source = trained.get("source")
    return bool(source) and (catalog.source == source or catalog.identity == source_identity(str(source)))


def check_leakage(model: Model, whole: Catalog | None, evaluated: Catalog, split_name: str) -> dict:
    """Evaluation images that are copies or near copies of training images (leakage.py), with a warning."""
    from catalens.data.leakage import Overlap, training_overlap

    if split_name in ("train", "all") and whole is not None:
        overlap = Overlap(False, f"not checked: the {split_name} split holds the training images themselves")
    else:
        training = training_images(model, whole)
        overlap = training_overlap(evaluated, training) if isinstance(training, Catalog) else Overlap(False, training)
    if overlap.leaked:
        warn(f"{overlap.exact:,} of the {overlap.evaluated_images:,} evaluation images are byte-identical to "
             f"training images and {overlap.near:,} more are near duplicates (perceptual hash within "
             f"{overlap.max_distance} bits): this score is optimistic; examples in report.md")
    return overlap.to_dict()


def training_images(model: Model, whole: Catalog | None) -> Catalog | str:
    """The images the model was trained on (the train split), or why they cannot be read here."""
    if whole is not None:
        return train_split(whole)
    spec = model.card.data.get("spec")
    if not spec:
        return "not checked: the model card does not say what the model was trained on"
    try:
        catalog = load_catalog(spec, trained_options(model.card.data))
    except CatalensError as error:
        return f"not checked: the training data {spec} cannot be read here ({str(error)[:120]})"
    return train_split(catalog)


def choose_split(catalog: Catalog, split: str | None) -> tuple[Catalog, str]:
    if split in (None, "auto"):
        if catalog.has_split("test"):
            return catalog.split("test"), "test"
        return catalog, "all"
    if split == "all":
        return catalog, "all"
    if not catalog.has_split(split):
        present = sorted(set(catalog.table["split"]) - {""}) or ["none"]
        raise CatalensError(f"the data has no {split!r} split (it has: {', '.join(present)}); use --split all")
    return catalog.split(split), split


def align_classes(catalog: Catalog, model: Model) -> np.ndarray:
    """Integer labels in the model's class order; refuses data whose classes the model does not know."""
    unknown = sorted(set(catalog.table["label"]) - set(model.classes) - {""})
    if unknown:
        shown = ", ".join(unknown[:8]) + (" ..." if len(unknown) > 8 else "")
        raise CatalensError(
            f"the model does not match the data: classes {shown} are unknown to it (it knows "
            f"{', '.join(model.classes[:10])}{' ...' if len(model.classes) > 10 else ''}); "
            "pass the --labels mapping used in training or evaluate on data with the same classes"
        )
    index = {name: i for i, name in enumerate(model.classes)}
    return catalog.table["label"].map(index).to_numpy(np.int64)


def classification_metrics(truth: np.ndarray, probabilities: np.ndarray, classes: list[str]) -> dict:
    n = len(classes)
    predicted = probabilities.argmax(1)
    labels = list(range(n))
    from sklearn.metrics import confusion_matrix

    matrix = confusion_matrix(truth, predicted, labels=labels)
    precision, recall, f1, support = per_class_scores(truth, predicted, n)
    total = matrix.sum()
    per_class = {}
    for i, name in enumerate(classes):
        true_negative = total - matrix[i, :].sum() - matrix[:, i].sum() + matrix[i, i]
        false_negative = matrix[i, :].sum() - matrix[i, i]
        npv = true_negative / (true_negative + false_negative) if true_negative + false_negative else 0.0
        per_class[name] = {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                           "npv": float(npv), "support": int(support[i])}
    weights = support / max(1, support.sum())
    ranks = (-probabilities).argsort(axis=1)
    top_k = {}
    for k in (1, 3, 5):
        if k <= n:
            top_k[str(k)] = float((ranks[:, :k] == truth[:, None]).any(axis=1).mean())
    confused: list[dict[str, Any]] = [
        {"true": classes[i], "predicted": classes[j], "count": int(matrix[i, j]),
         "share_of_true": float(matrix[i, j] / max(1, matrix[i].sum()))}
        for i in range(n) for j in range(n) if i != j and matrix[i, j] > 0
    ]
    confused.sort(key=lambda item: -item["count"])
    return {
        "accuracy": float((predicted == truth).mean()),
        "top_k_accuracy": top_k,
        "macro_precision": present_mean(precision, support),
        "macro_recall": present_mean(recall, support),
        "macro_f1": present_mean(f1, support),  # metrics.py: the one definition, as in training
        "weighted_f1": float((f1 * weights).sum()),
        "per_class": per_class,
        "confusion_matrix": matrix.tolist(),
        "most_confused": confused[:10],
    }


def measure_speed(model: Model, sample: torch.Tensor, batch_size: int = 512, repeats: int = 30,
                  seconds: float = 1.0) -> dict:
    """Latency at batch 1 (median ms) and throughput at a large batch (images/s), model only. The large batch is
    the largest of 512, 256, 128 that one call runs in about `seconds`, else the sample's own (64): a photo
    backbone on a CPU reaches its throughput at 64 already, and 512 would cost it 20-30 s of measuring."""
    one = sample[:1]
    model.logits(one)
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        model.logits(one)
        timings.append((time.perf_counter() - started) * 1000)
    model.logits(sample)  # the first call at a new batch shape is slower (onnxruntime, the traced network)
    started = time.perf_counter()
    model.logits(sample)
    per_image = (time.perf_counter() - started) / len(sample)
    batch_size = next((size for size in (batch_size, 256, 128) if size <= batch_size and size * per_image <= seconds),
                      len(sample))
    big = sample.repeat((batch_size + len(sample) - 1) // len(sample), 1, 1, 1)[:batch_size]
    model.logits(big)
    rounds, started = 0, time.perf_counter()
    while rounds < 3 or time.perf_counter() - started < 1.0:
        model.logits(big)
        rounds += 1
    return {
        "latency_ms_batch1": round(statistics.median(timings), 3),
        "throughput_images_per_s": round(rounds * batch_size / (time.perf_counter() - started), 1),
        "throughput_batch_size": batch_size,
    }


def evaluate(model_dir: str | Path, data: str, labels: str | None = None, out: str | Path | None = None,
             split: str | None = None, batch_size: int = 256, workers: int | None = None,
             weights: str = WEIGHTS_FILE, examples: int = 32, backend: str = "auto",
             data_overrides: dict | None = None, leakage_check: bool = True, text: str | None = None) -> dict:
    """Evaluate a run directory on DATA; write metrics.json, report.md and plots into `out`.
    `data_overrides` replace the training run's data options (categories, level, sample, ...)."""

    model = Model.load(model_dir, weights=weights, backend=backend)
    catalog, labels, training_data = evaluation_catalog(model, data, labels, data_overrides)
    read_text_columns(model, text, catalog, data)
    whole = catalog
    catalog, split_name = choose_split(catalog, split)
    seen = int((catalog.table["split"] == "train").sum())
    if split_name == "all" and seen and training_data:
        warn(f"evaluating on every item, including {seen:,} images the model was trained on; "
             "pass --split val (or test) for a held-out score")
    if not len(catalog):
        raise CatalensError(f"no items to evaluate in {data} ({split_name} split)")
    truth_all = align_classes(catalog, model)
    model_path = Path(model_dir)
    out = Path(out) if out else (model_path / "eval" if model_path.is_dir() else model_path.with_suffix(".eval"))
    out.mkdir(parents=True, exist_ok=True)

    result: Predictions = predict_catalog(model, catalog, batch_size, workers, description=f"evaluating {split_name}")
    if not len(result.rows):
        raise CatalensError(f"none of the {len(catalog)} images could be read; see the warnings above")
    truth = truth_all[result.rows]
    metrics = classification_metrics(truth, result.probabilities, model.classes)
    sample = next(iter(make_sample(model, catalog, result)))
    metrics.update(
        classes=model.classes,
        split=split_name,
        items=int(len(result.rows)),
        unreadable=[{"ref": ref, "reason": reason} for ref, reason in result.failures],
        num_params=model.num_params,
        model_size_mb=round(model.weights_path.stat().st_size / 1e6, 3) if model.weights_path else 0.0,
        evaluation_images_per_s=round(result.images_per_s, 1),
        evaluation_seconds=round(result.seconds, 3),
        data=data,
        labels=labels,
        model=str(model_dir),
        architecture=model.card.architecture,
        device=str(model.device),
        backend=model.backend,
        torch_threads=torch.get_num_threads(),
        provenance=bootstrap_provenance(data),
        validation_how=(model.card.validation_data or {}).get("how", "not recorded (a run trained before catalens "
                                                                      "recorded it)"),
    )
    if result.heads:  # a --text model: each input on its own and fused, on the same rows (those with an image)
        metrics.update(by_input(model, result, truth))
    if result.targets:  # a --targets run: every target, and the tree's answers at a few thresholds
        metrics.update(target_metrics(model, catalog, result, out))
    metrics["calibration"] = calibration_metrics(model, catalog, result, truth, out)
    metrics["recipe"] = model.card.recipe
    metrics["int8"] = model.card.int8
    metrics.update(measure_speed(model, sample))
    if leakage_check:
        metrics["leakage"] = check_leakage(model, whole if training_data else None, catalog, split_name)
    if catalog_has_products(catalog):  # products with several images: their averaged prediction, as served
        metrics.update(product_scores(catalog, result, truth))
    if result.failures:
        warn(f"{len(result.failures)} image(s) could not be read and were left out; listed in metrics.json")
    grid = write_plots(model, catalog, result, truth, metrics, out, examples)
    write_json(out / "metrics.json", metrics)
    record_in_card(model, metrics)
    (out / "report.md").write_text(render_report(metrics, grid is not None))
    print_summary(metrics)
    info(f"report: {out / 'report.md'}")
    return metrics


def by_input(model: Model, result: Predictions, truth: np.ndarray) -> dict:
    """A --text model's scores from the image alone, the title alone and both, on the rows with an image."""
    with_image = len(result.heads["image"])
    scores = {}
    for name in ("image", "text", "fused"):
        found = classification_metrics(truth[:with_image], result.heads[name], model.classes)
        scores[name] = {key: found[key] for key in ("accuracy", "macro_f1", "weighted_f1")} | {"items": with_image}
    return {"by_input": scores, "text_columns": model.text_columns,
            "predicted_from_text_alone": [ref for ref, _ in result.text_only]}


def product_scores(catalog: Catalog, result: Predictions, truth: np.ndarray) -> dict:
    """Accuracy per product, of the images' averaged prediction (as served and as `predict` answers)."""
    ids = catalog.table["product_id"].to_numpy()[result.rows]
    products, mean, _ = average_by_product(ids, result.probabilities)
    product_truth = pd.Series(truth).groupby(ids, sort=False).first().reindex(products).to_numpy()
    return {"products": int(len(products)), "product_accuracy": float((mean.argmax(1) == product_truth).mean())}


def write_plots(model: Model, catalog: Catalog, result: Predictions, truth: np.ndarray, metrics: dict, out: Path,
                examples: int):
    """The confusion matrices and the grid of the most confident mistakes (None when there is none)."""
    plot_confusion(np.array(metrics["confusion_matrix"]), model.classes, out / "confusion_matrix.png", False)
    plot_confusion(np.array(metrics["confusion_matrix"]), model.classes, out / "confusion_matrix_normalized.png", True)
    wrong = np.flatnonzero(result.probabilities.argmax(1) != truth)
    wrong = wrong[np.argsort(-result.probabilities[wrong].max(1))][:examples]
    return plot_examples(
        [catalog.read(int(result.rows[i])) for i in wrong],
        [f"{model.classes[truth[i]]} -> {model.classes[result.probabilities[i].argmax()]}"
         f" ({result.probabilities[i].max():.2f})" for i in wrong],
        out / "misclassified.png",
    )


def row_temperatures(model: Model, catalog: Catalog, result: Predictions) -> np.ndarray:
    """The temperature that divided each evaluated row's logits: the image head's, or for a --text model the
    fused head's where the row has text, the image head's where it has none, the text head's for the rows
    answered from their text alone (predict_catalog appends those last)."""
    if model.text is None:
        return np.full(len(result.rows), model.temperature)
    temperatures = model.calibration.get("temperatures") or {}
    texts = catalog_texts(catalog.table, model.text_columns)
    with_image = len(result.rows) - len(result.text_only)
    return np.array([temperatures.get("fused" if texts[row] else "image", 1.0) for row in result.rows[:with_image]]
                    + [temperatures.get("text", 1.0)] * len(result.text_only), np.float64)


def calibration_metrics(model: Model, catalog: Catalog, result: Predictions, truth: np.ndarray, out: Path) -> dict:
    """ECE before and after temperature scaling on the evaluated rows, the reliability diagram, the risk-coverage
    curve, and what the thresholds chosen on validation (98 %, 99 % accuracy) give here."""
    calibrated = np.asarray(result.probabilities, np.float64)
    scaled = np.asarray(result.scaled if result.scaled is not None else calibrated, np.float64)
    # softmax(z / T) ** T is proportional to softmax(z): the uncalibrated probabilities without a second pass
    powered = np.log(np.maximum(scaled, 1e-300)) * row_temperatures(model, catalog, result)[:, None]
    uncalibrated = np.exp(powered - powered.max(axis=1, keepdims=True))
    uncalibrated /= uncalibrated.sum(axis=1, keepdims=True)
    after, correct = confidence_and_correct(calibrated, truth)
    before, _ = confidence_and_correct(uncalibrated, truth)
    curve = compact_curve(risk_coverage(after, correct))
    targets = {}
    for target, point in (model.calibration.get("targets") or {}).items():
        if point:
            targets[target] = {"validation": point, "evaluated": coverage_at(after, correct, point["threshold"])}
    reliability = {"uncalibrated": reliability_bins(before, correct), "calibrated": reliability_bins(after, correct)}
    plot_reliability(reliability["uncalibrated"], reliability["calibrated"], out / "reliability.png")
    marks = [{"coverage": item["evaluated"]["coverage"], "accuracy": item["evaluated"]["accuracy"],
              "label": f"threshold {item['validation']['threshold']:.3f} (for {float(target):.0%} on validation)"}
             for target, item in targets.items() if item["evaluated"]["answered"]]
    plot_risk_coverage(curve, out / "risk_coverage.png", marks)
    return {
        "status": model.calibration.get("status", "uncalibrated"),
        "reason": model.calibration.get("reason", "" if model.calibrated else
                                        "the run was trained before catalens calibrated its probabilities"),
        "temperature": model.temperature,
        "temperatures": model.calibration.get("temperatures"),
        "top_label_map": bool(model.calibration.get("top_label_map")),
        "validation_items": model.calibration.get("items", 0),
        "ece": expected_calibration_error(after, correct),
        "ece_uncalibrated": expected_calibration_error(before, correct),
        "reliability": reliability,
        "curve": curve,
        "targets": targets,
    }


def calibration_lines(calibration: dict) -> list[str]:
    """report.md's section on probabilities: ECE, the two pictures and the thresholds for target accuracies."""
    lines = ["", "## Probabilities", ""]
    if calibration["status"] == "calibrated":
        shown = ", ".join(f"{name} {value:.3f}" for name, value in (calibration["temperatures"] or {}).items()) \
            or f"{calibration['temperature']:.3f}"
        lines.append(f"Calibrated by temperature scaling (T = {shown})"
                     + (", then a top-label isotonic map (chosen over temperature alone by out-of-fold calibration "
                        "error on validation)" if calibration["top_label_map"] else "")
                     + f", fitted on the {calibration['validation_items']:,} items of the validation split.")
    else:
        lines.append(f"**Uncalibrated** ({calibration['reason']}): a probability of 0.9 need not mean 90 % right.")
    lines += ["", "| expected calibration error (15 equal-mass bins) | value |", "|---|---|",
              f"| before temperature scaling | {calibration['ece_uncalibrated']:.4f} |",
              f"| after (the probabilities catalens gives) | {calibration['ece']:.4f} |", "",
              "![reliability diagram](reliability.png)", "", "![risk-coverage curve](risk_coverage.png)", ""]
    for target, item in calibration["targets"].items():
        chosen, here = item["validation"], item["evaluated"]
        result = (f"answers **{here['coverage']:.1%}** of these items at **{here['accuracy']:.1%}** accuracy"
                  if here["answered"] else "answers none of these items")
        lines.append(f"- For {float(target):.0%} accuracy, validation chose `--threshold {chosen['threshold']:.3f}` "
                     f"({chosen['coverage']:.1%} of validation answered at {chosen['accuracy']:.1%}); here it "
                     f"{result} (`--target-accuracy {target}`).")
    if calibration["status"] == "calibrated" and not calibration["targets"]:
        lines.append("- No threshold reached 98 % accuracy on validation.")
    return lines


def record_in_card(model: Model, metrics: dict) -> None:
    """Keep the headline numbers of each evaluation in the run's model card (when it is writable)."""
    if model.path is None:
        return
    path = Path(model.path) / CARD_FILE
    if not os.access(path, os.W_OK):
        return
    card = json.loads(path.read_text())
    key = f"{metrics['data']} [{metrics['split']}]" + (f" labels={metrics['labels']}" if metrics["labels"] else "")
    card.setdefault("evaluations", {})[key] = {
        name: metrics[name] for name in ("accuracy", "macro_f1", "weighted_f1", "top_k_accuracy", "items",
                                         "latency_ms_batch1", "throughput_images_per_s")
    }
    write_json(path, card)


def make_sample(model: Model, catalog: Catalog, result: Predictions):
    """Yields a small uint8 batch of real images of the data, for speed measurement."""
    from catalens.loading.batches import make_batches

    subset = catalog.subset(result.rows[:64])
    for batch in make_batches(subset, model.preprocessing, 64, workers=0):
        if len(batch.rows):
            yield batch.images


def render_report(metrics: dict, has_examples: bool) -> str:
    lines = [
        f"# Evaluation of `{metrics['model']}` ({metrics['architecture']})", "",
        f"Data `{metrics['data']}`, split **{metrics['split']}**, {metrics['items']:,} images"
        + (f", label mapping `{metrics['labels']}`" if metrics["labels"] else "") + ".", "",
        *([f"**Measured on {metrics['provenance']}.**", ""] if metrics.get("provenance") else []),
        *([f"The model's validation split (its choices and calibration): {metrics['validation_how']}.", ""]
          if metrics.get("validation_how") else []),
        "| metric | value |", "|---|---|",
        f"| accuracy | {metrics['accuracy']:.4f} |",
    ]
    if "product_accuracy" in metrics:
        lines.append(f"| product accuracy (images averaged, {metrics['products']:,} products) | "
                     f"{metrics['product_accuracy']:.4f} |")
    lines += [f"| top-{k} accuracy | {v:.4f} |" for k, v in metrics["top_k_accuracy"].items() if k != "1"]
    lines += [
        f"| macro F1 | {metrics['macro_f1']:.4f} |", f"| weighted F1 | {metrics['weighted_f1']:.4f} |",
        f"| parameters | {metrics['num_params']:,} |", f"| model size | {metrics['model_size_mb']:.2f} MB |",
        f"| latency (batch 1) | {metrics['latency_ms_batch1']:.2f} ms/image |",
        f"| throughput (batch {metrics['throughput_batch_size']}) | "
        f"{metrics['throughput_images_per_s']:,.0f} images/s |",
        f"| evaluation end to end | {metrics['evaluation_images_per_s']:,.0f} images/s "
        f"({metrics['evaluation_seconds']:.2f} s, {metrics['device']}, {metrics['backend']}, "
        f"{metrics['torch_threads']} threads) |",
        *by_input_lines(metrics),
        *target_lines(metrics),
        "", "## Per class", "",
        "| class | precision | recall | F1 | NPV | support |", "|---|---|---|---|---|---|",
    ]
    for name, row in metrics["per_class"].items():
        lines.append(f"| {name} | {row['precision']:.4f} | {row['recall']:.4f} | {row['f1']:.4f} | "
                     f"{row['npv']:.4f} | {row['support']} |")
    lines += ["", "## Confusion matrix", "", "![counts](confusion_matrix.png)", "",
              "![row-normalised](confusion_matrix_normalized.png)", "", "## Most confused pairs", "",
              "| true | predicted as | count | share of true class |", "|---|---|---|---|"]
    lines += [f"| {c['true']} | {c['predicted']} | {c['count']} | {c['share_of_true']:.1%} |"
              for c in metrics["most_confused"]]
    if metrics.get("calibration"):
        lines += calibration_lines(metrics["calibration"])
    lines += leakage_lines(metrics.get("leakage"))
    lines += recipe_lines(metrics.get("recipe"), metrics.get("int8"))
    if has_examples:
        lines += ["", "## Misclassified examples (most confident mistakes first)", "", "![mistakes](misclassified.png)"]
    if metrics["unreadable"]:
        lines += ["", f"## Unreadable images ({len(metrics['unreadable'])})", ""]
        lines += [f"- `{item['ref']}`: {item['reason']}" for item in metrics["unreadable"][:100]]
    return "\n".join(lines) + "\n"


def recipe_lines(recipe: dict | None, int8: dict | None) -> list[str]:
    """report.md: the candidates the auto recipe tried (accuracy, speed, training time), and the int8 check."""
    lines = []
    if recipe and recipe.get("tried"):
        lines += ["", "## How the auto recipe chose this model", "",
                  f"Chosen: **{recipe['chosen']}**, the most accurate by cross-validation on the training split among "
                  f"the candidates at least --min-speed {recipe.get('min_speed', 0):g} photos/s. Speed: "
                  f"{recipe.get('speed_measured', 'photos/s on the training machine')}.", "",
                  "| candidate | cross-validated accuracy | validation accuracy | photos/s (batches) | ms per photo "
                  "(single) | training s | note |", "|---|---|---|---|---|---|---|"]
        for row in recipe["tried"]:
            def shown(value, form):
                return format(value, form) if isinstance(value, (int, float)) else "-"

            lines.append(f"| {row['model']} | {shown(row.get('cv_accuracy'), '.4f')} | "
                         f"{shown(row.get('val_accuracy'), '.4f')} | {shown(row.get('sort_photos_per_s'), '.0f')} | "
                         f"{shown(row.get('serve_ms_p50'), '.1f')} | {shown(row.get('train_s'), '.0f')} | "
                         f"{row.get('note', '')} |")
    if int8:
        lines += ["", "## int8", "", f"**{int8.get('status')}**: {int8.get('why', '')}."]
        if "agreement" in int8:
            lines.append(f"Predictions agree with float32 on {int8['agreement']:.1%} of "
                         f"{int8['validation_photos']:,} validation photos; tolerance {int8['tolerance']:g}.")
    return lines


def by_input_lines(metrics: dict) -> list[str]:
    """report.md's table of a --text model's heads side by side."""
    if not metrics.get("by_input"):
        return []
    lines = ["", f"## Image, text ({', '.join(metrics['text_columns'])}) and fused", "",
             f"On the {next(iter(metrics['by_input'].values()))['items']:,} items with an image; the model answers "
             "with the fused head, or the image head for an item without text.", "",
             "| input | accuracy | macro F1 | weighted F1 |", "|---|---|---|---|"]
    lines += [f"| {name} | {row['accuracy']:.4f} | {row['macro_f1']:.4f} | {row['weighted_f1']:.4f} |"
              for name, row in metrics["by_input"].items()]
    if metrics["predicted_from_text_alone"]:
        lines += ["", f"{len(metrics['predicted_from_text_alone'])} item(s) whose image could not be read were "
                  "predicted from their text alone."]
    return lines


def leakage_lines(overlap: dict | None) -> list[str]:
    """report.md's section on evaluation images that copy training images."""
    if not overlap:
        return []
    lines = ["", "## Overlap with the training images", ""]
    if not overlap["checked"]:
        return lines + [overlap["note"].capitalize() + "."]
    lines.append(f"Of {overlap['evaluated_images']:,} evaluation images, **{overlap['exact']:,}** are byte-identical "
                 f"to one of the {overlap['training_images']:,} training images and **{overlap['near']:,}** more are "
                 f"near duplicates (perceptual hash within {overlap['max_distance']} of 64 bits)"
                 + (": the scores above are optimistic." if overlap["exact"] + overlap["near"] else ".")
                 + (f" Note: {overlap['note']}." if overlap["note"] else ""))
    if overlap["examples"]:
        lines += ["", "| evaluation image | training image | kind |", "|---|---|---|"]
        lines += [f"| `{e['evaluated']}` | `{e['training']}` | {e['kind']} |" for e in overlap["examples"]]
    return lines


def print_summary(metrics: dict) -> None:
    table = Table(title=f"{metrics['architecture']} on {metrics['split']} ({metrics['items']:,} images)")
    for column in ("class", "precision", "recall", "F1", "NPV", "support"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for name, row in metrics["per_class"].items():
        table.add_row(name, f"{row['precision']:.4f}", f"{row['recall']:.4f}", f"{row['f1']:.4f}",
                      f"{row['npv']:.4f}", str(row["support"]))
    table.add_section()
    table.add_row("accuracy", "", "", f"{metrics['accuracy']:.4f}", "", str(metrics["items"]))
    table.add_row("macro avg", f"{metrics['macro_precision']:.4f}", f"{metrics['macro_recall']:.4f}",
                  f"{metrics['macro_f1']:.4f}", "", "")
    console.print(table)
    for name, row in metrics.get("by_input", {}).items():
        console.print(f"{name:>5} input: accuracy {row['accuracy']:.4f} | macro F1 {row['macro_f1']:.4f}")
    calibration = metrics.get("calibration")
    if calibration:
        console.print(f"calibration: ECE {calibration['ece_uncalibrated']:.4f} uncalibrated -> {calibration['ece']:.4f}"
                      + ("" if calibration["status"] == "calibrated" else " (uncalibrated model)"), markup=False)
    console.print(
        f"parameters {metrics['num_params']:,} | size {metrics['model_size_mb']:.2f} MB | "
        f"latency {metrics['latency_ms_batch1']:.2f} ms/image (batch 1) | "
        f"throughput {metrics['throughput_images_per_s']:,.0f} img/s | "
        f"evaluation {metrics['evaluation_images_per_s']:,.0f} img/s end to end"
    )
