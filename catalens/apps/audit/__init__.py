"""`catalens audit DATA --out DIR`: the mislabelled, duplicated, leaked, off-topic and broken images of a catalog,
ranked, with pictures, before anyone trains on it.

    catalens audit photos/ --out audit/                       # ImageNet Lite0 features, 5-fold heads
    catalens audit bson:train.bson --sample 50000 --out audit/
    catalens audit photos/ --out audit/ --apply review/       # copy the suspects into review folders
    catalens audit photos/ --out audit/ --write-catalog clean.csv --remove marked.csv

Steps (each in its module): features of every image in a memory-mapped array (support/embeddings.py) and
its identity, exact key and perceptual hash (data/identity.py); out-of-fold probabilities and confident learning
(label_issues.py); nearest neighbours through faiss (neighbours.py); duplicates, leaks across splits, outliers
(findings.py); issues.csv and the reports (report.py); acting on them (act.py).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from catalens.apps.audit.findings import (
    KINDS,
    Finding,
    duplicate_findings,
    duplicate_pairs,
    outlier_findings,
)
from catalens.apps.audit.label_issues import confused_pairs, disagreements, label_suspects, out_of_fold
from catalens.apps.audit.report import suspects_grid, write_issues, write_reports
from catalens.data import DataOptions, load_catalog
from catalens.data.catalog import Catalog
from catalens.data.identity import identify
from catalens.errors import CatalensError
from catalens.models.neighbours import nearest, outlier_scores
from catalens.progress import info, warn
from catalens.support.embeddings import DEFAULT_BACKBONE, embed, feature_network

__all__ = ["AuditResult", "audit", "run_audit"]


@dataclass
class AuditResult:
    out: Path
    catalog: Catalog
    findings: list[Finding]
    summary: dict
    probabilities: np.ndarray | None = None  # out-of-fold, rows of the labelled readable items
    scored_rows: np.ndarray | None = None
    label_scores: np.ndarray | None = None  # 1 - p(given) of each scored row

    def counts(self) -> dict[str, int]:
        return {kind: sum(f.kind == kind for f in self.findings) for kind in KINDS}


def audit(data: str, out: str | Path, model: str | Path | None = None, backbone: str = DEFAULT_BACKBONE,
          options: DataOptions | None = None, folds: int = 5, batch_size: int = 64,
          workers: int | None = None) -> AuditResult:
    """Audit DATA into OUT (issues.csv, report.md, report.html, label_suspects.png, summary.json)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    catalog = load_catalog(data, options or DataOptions(), split=False)
    return run_audit(catalog, out, model, backbone, folds, batch_size, workers)


def label_findings(findings: list[Finding], probabilities: np.ndarray, label_ids: np.ndarray, scored: np.ndarray,
                   labels: list[str], classes: list[str]) -> np.ndarray:
    """Suspected label errors added to `findings`: confident learning's flags first (score 1 + 1 - p(given)), then
    the out-of-fold disagreements it left; returns each scored row's label score."""
    flagged, label_scores = label_suspects(probabilities, label_ids)
    suggested = probabilities.argmax(1)
    listed = set(flagged.tolist())
    extra = [i for i in disagreements(probabilities, label_ids) if i not in listed]
    for i, how, base in [*((i, "confident learning", 1.0) for i in flagged),
                         *((i, "the heads disagree with the label", 0.0) for i in extra)]:
        row, given, best = int(scored[i]), label_ids[i], suggested[i]
        findings.append(Finding(row, "label", base + float(label_scores[i]), labels[row], classes[best],
                                evidence=f"p({classes[given]}) = {probabilities[i, given]:.3f}, "
                                         f"p({classes[best]}) = {probabilities[i, best]:.3f} "
                                         f"(out of fold; {how})"))
    return label_scores


def run_audit(catalog: Catalog, out: Path, model=None, backbone: str = DEFAULT_BACKBONE, folds: int = 5,
              batch_size: int = 64, workers: int | None = None) -> AuditResult:
    started = time.time()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if not len(catalog):
        raise CatalensError(f"{catalog.source} holds no images to audit")
    table = catalog.table.reset_index(drop=True)
    items = table["ref"].astype(str).tolist()
    labels, splits = table["label"].astype(str).tolist(), table["split"].astype(str).tolist()
    n, notes = len(table), []
    module, preprocessing, source = feature_network(model, backbone)
    info(f"auditing {n:,} images of {catalog.source}; features: {source}")
    embedded = embed(catalog, module, preprocessing, source, out / "features.npy", batch_size, workers)
    facts = identify(catalog, threads=4, progress=True)
    findings: list[Finding] = []
    broken = {**facts.failures, **{row: reason for row, reason in embedded.failures.items() if row >= 0}}
    for row, reason in sorted(broken.items()):
        findings.append(Finding(row, "broken", 1.0, labels[row], evidence=reason))
    readable = embedded.readable & facts.hashed

    class_index = {name: i for i, name in enumerate(catalog.classes)}
    scored = np.flatnonzero(readable & np.array([label in class_index for label in labels]))
    label_ids = np.array([class_index[labels[row]] for row in scored], dtype=np.int64)
    probabilities = label_scores = None
    health: dict = {"per_class": catalog.class_counts()}
    nonzero = [count for count in health["per_class"].values() if count]
    health["imbalance_ratio"] = max(nonzero) / min(nonzero) if nonzero else None
    if len(scored):
        probabilities = out_of_fold(np.asarray(embedded.features[scored]), label_ids, len(catalog.classes), folds)
    if probabilities is None:
        note = (f"label issues not searched: they need at least 2 classes with {folds} or more readable images "
                f"each ({len(np.unique(label_ids)) if len(scored) else 0} class(es) here); duplicates, leaks, "
                "outliers and broken images are")
        warn(note)
        notes.append(note)
    else:
        label_scores = label_findings(findings, probabilities, label_ids, scored, labels, catalog.classes)
        health["oof_accuracy"] = float((probabilities.argmax(1) == label_ids).mean())
        health["confused"] = confused_pairs(probabilities, label_ids, catalog.classes)

    rows = np.flatnonzero(embedded.readable)
    similarities = np.full((n, 10), -1.0, np.float32)
    neighbours = np.full((n, 10), -1, np.int64)
    if len(rows) > 1:
        sims, found = nearest(embedded.features, rows, k=10)
        similarities[rows], neighbours[rows] = sims, found
    pairs = duplicate_pairs(facts.exact, facts.phash, facts.hashed, similarities, neighbours, small=facts.small)
    belief = {int(row): probabilities[i] for i, row in enumerate(scored)} if probabilities is not None else {}
    findings += duplicate_findings(pairs, n, labels, splits, items, belief, catalog.classes)
    z = np.zeros(n)
    if len(rows) > 11:
        z[rows] = outlier_scores(similarities[rows])
    findings += outlier_findings(z, embedded.readable, embedded.pixel_std, facts.width, facts.height, labels)

    # files the listing left out (zero-byte) are not rows: list them as broken too, after the rows (their thumbnails
    # are grey squares)
    left_out = catalog.left_out_files()
    for offset, problem in enumerate(left_out):
        findings.append(Finding(n + offset, "broken", 1.0, evidence=f"{problem['reason']} (left out of the catalog)"))
    items = items + [str(problem["ref"]) for problem in left_out]
    summary = {"source": catalog.source, "items": n, "features": source, "folds": folds,
               "counts": {kind: sum(f.kind == kind for f in findings) for kind in KINDS},
               "class_health": health, "notes": notes, "seconds": round(time.time() - started, 1)}
    write_issues(out / "issues.csv", findings, items)
    write_reports(out, catalog, findings, items, summary)
    suspects_grid(out / "label_suspects.png", catalog, findings)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    info(f"audit done in {summary['seconds']:.0f} s: " + ", ".join(f"{count:,} {kind}" for kind, count in
                                                                   summary["counts"].items())
         + f"; report: {out / 'report.html'}")
    return AuditResult(out, catalog, findings, summary, probabilities, scored, label_scores)
