"""Prediction output: the record of each image or product (top-k, level names) and its CSV, JSON Lines or Parquet
form, shared by the local and the Ray engine so that both write the same file."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from catalens.errors import CatalensError
from catalens.inference.products import level_names
from catalens.models.calibration import answered
from catalens.models.targets import TAGS
from catalens.rundir.run import Model, top_k


def top_k_entries(model: Model, probabilities: np.ndarray, k: int) -> list[dict]:
    """[{"label", "probability", level names when the model knows its category tree}, ...], best first."""
    entries = [{"label": label, "probability": round(p, 6)} for label, p in top_k(probabilities, model.classes, k)]
    if model.card.hierarchy:
        for entry in entries:
            entry.update(level_names(model, entry["label"]))
    return entries


def prediction_records(model: Model, inputs, item_ids, probabilities: np.ndarray, k: int, images=None) -> list[dict]:
    """The output record of each image or product: input, id (when the catalog has its own), top label and
    probability, images (per product), top-k entries."""
    records = []
    for i, (name, row) in enumerate(zip(inputs, probabilities)):
        best = top_k_entries(model, row, k)
        record = {"input": str(name), **({"id": str(item_ids[i])} if item_ids is not None else {}),
                  "label": best[0]["label"], "probability": best[0]["probability"]}
        if images is not None:
            record["images"] = int(images[i])
        record["top_k"] = best
        records.append({**record, "error": ""})
    return records


def add_targets(records: list[dict], model: Model, probabilities: dict[str, np.ndarray], k: int,
                min_confidence: float | None = None) -> None:
    """A --targets run: each record's `targets` ({name: label, probability, top_k}) and, with `min_confidence`, its
    `answer` at the deepest sure level of the tree and `answered_level` (models/targets.Targets.answers)."""
    answers = model.targets.answers(probabilities, min_confidence) if min_confidence is not None else None
    for row, record in enumerate(records):
        record["targets"] = target_entries(model, {name: value[row] for name, value in probabilities.items()}, k)
        if TAGS in probabilities:
            record["tags"] = tag_entries(model, probabilities[TAGS][row])
        if answers is not None:
            record["answer"], record["answered_level"] = answers[row]


def tag_entries(model: Model, probabilities: np.ndarray) -> list[dict]:
    """--tags: the tags given (probability at least the tag's threshold), most probable first."""
    tags = model.targets.tags
    given = np.flatnonzero(tags.given(probabilities))
    return [{"tag": tags.names[i], "probability": round(float(probabilities[i]), 6)}
            for i in given[np.argsort(-probabilities[given])]]


def target_entries(model: Model, probabilities: dict[str, np.ndarray], k: int) -> dict:
    """One photo's (or product's) answer per target: {name: {"label", "probability", "top_k": [...]}}."""
    entries = {}
    for name, head in model.targets.heads.items():
        best = [{"label": label, "probability": round(p, 6)}
                for label, p in top_k(probabilities[name], head.classes, k)]
        entries[name] = {**best[0], "top_k": best}
    return entries


def finish_records(records: list[dict], model: Model, targets: dict[str, np.ndarray], k: int,
                   min_confidence: float | None) -> None:
    """After prediction_records, on either engine: each target's columns (a --targets run: `targets`, one row per
    record) and, under --min-confidence, each record's answer: at the deepest sure level of a tree, or the label
    when sure."""
    tree_answers = min_confidence is not None and bool(targets) and bool(model.targets.heads)
    if targets:
        add_targets(records, model, targets, k, min_confidence if tree_answers else None)
    if min_confidence is not None and not tree_answers:  # one label (a tags-only run too): sure or not
        add_answers(records, min_confidence)


def add_answers(records: list[dict], min_confidence: float) -> None:
    """A single-target run under --min-confidence: the label when its probability is at least P, else ""."""
    for record in records:
        if not record["error"]:
            sure = bool(answered(record["probability"], min_confidence))
            record["answer"], record["answered_level"] = (record["label"], "label") if sure else ("", "")


def failure_records(failures: list[tuple[str, str]]) -> list[dict]:
    return [{"input": str(ref), "label": "", "probability": "", "top_k": [], "error": reason}
            for ref, reason in failures]


def write_records(handle, output_format: str, records: list[dict], model: Model, with_ids: bool,
                  per_product: bool) -> None:
    if output_format == "jsonl":
        for record in records:
            if not record["error"]:
                record.pop("error")
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        return
    writer = csv.writer(handle)
    hierarchy = bool(model.card.hierarchy)
    levels = [name for name in ("level1", "level2", "level3") if hierarchy and any(
        name in entry for entry in model.card.hierarchy.values())]
    thresholded = any("uncertain" in record for record in records)  # --threshold / --target-accuracy
    targets = target_columns(records)
    levels = [name for name in levels if name not in {column for column, _, _ in targets}]  # BSON --targets level1..
    answers = ["answer", "answered_level"] if any("answer" in record for record in records) else []
    answers = (["tags"] if any("tags" in record for record in records) else []) + answers
    writer.writerow(["input", *(["id"] if with_ids else []), "label", "probability",
                     *(["uncertain"] if thresholded else []), *(["images"] if per_product else []), *levels,
                     "top_k", *[name for name, _, _ in targets], *answers, "error"])
    for record in records:
        top = ";".join(f"{item['label']}:{item['probability']:.4f}" for item in record["top_k"])
        first = record["top_k"][0] if record["top_k"] else {}
        uncertain = int(record["uncertain"]) if "uncertain" in record else ""
        writer.writerow([record["input"], *([record.get("id", "")] if with_ids else []), record["label"],
                         record["probability"], *([uncertain] if thresholded else []),
                         *([record.get("images", "")] if per_product else []),
                         *[first.get(name, "") for name in levels], top,
                         *[target_value(record, name, key) for _, name, key in targets],
                         *[joined_tags(record) if key == "tags" else record.get(key, "") for key in answers],
                         record["error"]])


def joined_tags(record: dict) -> str:
    return "|".join(entry["tag"] for entry in record.get("tags", []))


def target_columns(records: list[dict]) -> list[tuple[str, str, str]]:
    """(CSV column, target, field) of a --targets run: TARGET, TARGET_probability and, when more than one class is
    listed (--top-k), TARGET_top_k."""
    first = next((record["targets"] for record in records if record.get("targets")), {})
    listed = any(len(entry["top_k"]) > 1 for entry in first.values())
    return [(f"{name}{suffix}", name, key) for name in first for suffix, key in
            (("", "label"), ("_probability", "probability"), *((("_top_k", "top_k"),) if listed else ()))]


def target_value(record: dict, name: str, key: str):
    entry = record.get("targets", {}).get(name)
    if entry is None:
        return ""
    if key == "top_k":
        return ";".join(f"{item['label']}:{item['probability']:.4f}" for item in entry["top_k"])
    return entry[key]


def write_parquet(path: Path, records: list[dict], model: Model, with_ids: bool, per_product: bool) -> None:
    """The CSV's columns as one Parquet file (top_k as JSON text), for outputs too big for a spreadsheet."""
    try:
        import pyarrow  # noqa: F401 - pandas needs it for Parquet
    except ImportError:
        raise CatalensError("--format parquet needs pyarrow: pip install pyarrow (or catalens[ray])") from None
    import pandas as pd

    buffer = io.StringIO()
    write_records(buffer, "csv", records, model, with_ids, per_product)
    buffer.seek(0)
    frame = pd.read_csv(buffer, dtype=str, keep_default_na=False)
    for name in [name for name in frame.columns if name == "probability" or name.endswith("_probability")]:
        frame[name] = pd.to_numeric(frame[name], errors="coerce")
    if any(record.get("targets") for record in records):  # nested too: one struct per target
        frame["targets"] = [record.get("targets") or None for record in records]
    frame.to_parquet(path, index=False)
