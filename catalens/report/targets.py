"""evaluate for a --targets run: each target's accuracy and macro-F1 (a tree's upper levels as the sums of their
children's, and from their own heads beside them), and the tree's answers under --min-confidence thresholds: how
many photos are answered at each depth, and how many of those are right at the depth answered."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from catalens.data.catalog import Catalog
from catalens.data.targets import TAGS_COLUMN, column, present, tag_matrix
from catalens.metrics import macro_f1, micro_f1
from catalens.models.targets import OWN, TAGS
from catalens.plots import plot_tree_answers
from catalens.progress import warn

THRESHOLDS = (0.5, 0.7, 0.8, 0.9, 0.95)


def truth_of(catalog: Catalog, name: str, first: bool, rows: np.ndarray) -> np.ndarray:
    return catalog.table["label" if first else column(name)].to_numpy(object)[rows]


def scores(values: np.ndarray, probabilities: np.ndarray, classes: list[str]) -> dict:
    """accuracy and macro-F1 over the rows whose true value is given; a value the head never saw in training
    counts as wrong (and is counted)."""
    given = present(values)
    lookup = {value: i for i, value in enumerate(classes)}
    truth = np.array([lookup.get(str(value), -1) for value in values[given]], np.int64)
    predicted = probabilities[given].argmax(1)
    seen = truth >= 0
    return {"accuracy": float((predicted == truth).mean()) if len(truth) else 0.0,
            "macro_f1": macro_f1(truth[seen], predicted[seen], len(classes)) if seen.any() else 0.0,
            "items": int(given.sum()), "missing": int((~given).sum()), "unseen_in_training": int((~seen).sum())}


def target_metrics(model, catalog: Catalog, result, out: Path) -> dict:
    targets = model.targets
    rows = result.rows
    absent = [name for name in targets.names[1:] if column(name) not in catalog.table.columns]
    if absent or (targets.tags is not None and TAGS_COLUMN not in catalog.table.columns):
        warn(f"{catalog.source} does not hold every target of this run ({', '.join(absent) or 'its tags'}): "
             "scored on the run's own label only")
        return {}
    found = {}
    truths = {}
    for index, (name, head) in enumerate(targets.heads.items()):
        truths[name] = truth_of(catalog, name, index == 0, rows)
        found[name] = scores(truths[name], result.targets[name], head.classes)
        if OWN + name in result.targets:
            found[name]["own_head"] = scores(truths[name], result.targets[OWN + name], head.classes)
    metrics = {"targets": found}
    if TAGS in result.targets:
        tags = targets.tags
        truth = tag_matrix(catalog.table[TAGS_COLUMN].to_numpy(object)[rows], tags.names)
        metrics["tags"] = tag_metrics(truth, tags.given(result.targets[TAGS]), result.targets[TAGS], tags.names)
    if targets.tree:
        metrics["tree"] = {"levels": targets.tree, "thresholds": tree_answers(targets, result.targets, truths)}
        chosen = (model.card.targets or {}).get("tree_thresholds") or {}
        metrics["tree"]["for_accuracy"] = {
            wanted: {"validation": entry, "evaluated": evaluated(targets, result.targets, truths, entry["threshold"])}
            for wanted, entry in chosen.items() if entry}
        plot_tree_answers(metrics["tree"], out / "tree_coverage.png")
    return metrics


def tag_metrics(truth: np.ndarray, given: np.ndarray, scores: np.ndarray, names: list[str]) -> dict:
    """Multi-label scores: per tag precision, recall, F1 and support; micro-F1 (every decision pooled), macro-F1
    (the mean over tags with support) and mAP (mean average precision of the scores, over tags with support)."""
    from sklearn.metrics import average_precision_score

    truth, given = truth > 0, np.asarray(given, bool)
    per_tag, f1s, precisions = {}, [], []
    for i, name in enumerate(names):
        tp = int((given[:, i] & truth[:, i]).sum())
        predicted, support = int(given[:, i].sum()), int(truth[:, i].sum())
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * tp / (predicted + support) if predicted + support else 0.0
        per_tag[name] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
        if support:
            f1s.append(f1)
            precisions.append(float(average_precision_score(truth[:, i], scores[:, i])))
    return {"per_tag": per_tag, "micro_f1": micro_f1(given, truth),
            "macro_f1": float(np.mean(f1s)) if f1s else 0.0, "map": float(np.mean(precisions)) if precisions else 0.0,
            "items": int(len(truth))}


def evaluated(targets, probabilities: dict, truths: dict, threshold: float) -> dict:
    """The answers at a --min-confidence chosen on validation, on the split being evaluated."""
    row = tree_answers(targets, probabilities, truths, (threshold,))[0]
    return {"threshold": threshold, "coverage": row["coverage"], "accuracy": row["accuracy_answered"],
            "answered": sum(entry["answered"] for entry in row["levels"].values())}


def tree_answers(targets, probabilities: dict, truths: dict, thresholds=THRESHOLDS) -> list[dict]:
    """At each threshold: per depth, the photos answered there and how many of them are right there (the
    answer's value at that depth compared with the truth's); with the totals."""
    return targets.answer_counts(probabilities, {level: truths[level] for level in targets.tree}, thresholds)


def target_lines(metrics: dict) -> list[str]:
    """report.md's section of a --targets run."""
    if not metrics.get("targets") and not metrics.get("tags"):
        return []
    lines = ["", "## Targets", "", "| target | accuracy | macro F1 | items | missing |", "|---|---|---|---|---|"]
    for name, row in metrics["targets"].items():
        lines.append(f"| {name} | {row['accuracy']:.4f} | {row['macro_f1']:.4f} | {row['items']:,} | "
                     f"{row['missing']:,} |")
        if "own_head" in row:
            own = row["own_head"]
            lines.append(f"| {name} (its own head) | {own['accuracy']:.4f} | {own['macro_f1']:.4f} | "
                         f"{own['items']:,} | {own['missing']:,} |")
    tags = metrics.get("tags")
    if tags:
        lines += ["", f"Tags ({tags['items']:,} photos): micro-F1 {tags['micro_f1']:.4f}, macro-F1 "
                  f"{tags['macro_f1']:.4f}, mAP {tags['map']:.4f}", "",
                  "| tag | precision | recall | F1 | support |", "|---|---|---|---|---|"]
        lines += [f"| {name} | {row['precision']:.4f} | {row['recall']:.4f} | {row['f1']:.4f} | {row['support']:,} |"
                  for name, row in tags["per_tag"].items()]
    tree = metrics.get("tree")
    if tree:
        lines += ["", f"Tree {' > '.join(tree['levels'])}: upper levels are the sums of their children's "
                  "probabilities. Answers at the deepest sure level (`--min-confidence`):", "",
                  "| threshold | answered | right at the depth answered | " + " | ".join(
                      f"at {level}" for level in tree["levels"]) + " |",
                  "|---|---|---|" + "---|" * len(tree["levels"])]
        for row in tree["thresholds"]:
            lines.append(f"| {row['threshold']:g} | {row['coverage']:.1%} | {row['accuracy_answered']:.1%} | "
                         + " | ".join(f"{row['levels'][level]['answered']:,}" for level in tree["levels"]) + " |")
        for wanted, entry in tree.get("for_accuracy", {}).items():
            val, here = entry["validation"], entry["evaluated"]
            lines += ["", f"For {float(wanted):.0%} of the answers right: `--min-confidence {val['threshold']:g}` "
                      f"(the lowest that got there on the validation split: {val['coverage']:.1%} answered, "
                      f"{val['accuracy']:.1%} right); on this split it answers {here['coverage']:.1%}, "
                      f"{here['accuracy']:.1%} right."]
        lines += ["", "![tree](tree_coverage.png)"]
    return lines
