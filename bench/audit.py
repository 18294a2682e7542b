"""`catalens audit` against planted problems on real photos, with the baselines a practitioner would run, in one
run (issue 18). 2 CPU cores.

- noise: flip 5 % of clothing-small's training labels at random (seeded), audit the training split, and report
  precision and recall of the flipped items among the top-k suspects (k = number flipped; target >= 0.80 both),
  and of the items cleanlab flags; beside it, in the same run: cleanlab given a plain scikit-learn
  LogisticRegression's 5-fold out-of-fold probabilities on the same features, and a random ranking.
- duplicates: re-encode, resize or crop 5 % of the photos back into a copy of clothing-small, audit it all, and
  report near-duplicate recall and precision over the planted (original, copy) pairs, and the wall time of the
  whole audit (target <= 5 min); imagededup's PHash in the same run when it is installed.
- small: 150-photo subsets of clothing-small's training photos (seeded) with 1, 3 and 10 labels flipped, seeds 0-9
  (0-2 until 2026-12-04: at 1 flip, 3 flips in all measure recall in steps of a third):
  recall and precision of the flips among the audit's listed label findings (confident learning's flags and the
  out-of-fold disagreements below them; target: recall >= 0.9), beside cleanlab's default (find_label_issues) on the
  same out-of-fold probabilities.
- scale: 100,000 synthetic feature vectors (1280-d, 2 % planted near copies) through the duplicate and outlier
  steps: seconds and peak memory (targets <= 60 s, <= 2 GB), in a child process.
- fashion-mnist: audit the 10,000 test images and keep the report (look at its label_suspects.png).

    python bench/audit.py --record                    # everything
    python bench/audit.py --only noise --only small --record
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import FASHION, SHARED, record
from PIL import Image

from catalens.apps.audit import audit, run_audit
from catalens.data import load_catalog

OUT = Path(__file__).resolve().parent / "out"


def precision_recall(predicted: set, truth: set) -> tuple[float, float]:
    hits = len(predicted & truth)
    return hits / max(1, len(predicted)), hits / max(1, len(truth))


def noise(root: Path, seed: int, fraction: float = 0.05) -> list[str]:
    catalog = load_catalog(str(SHARED / "clothing-small"), split=False)
    catalog = catalog.split("train")
    table = catalog.table.copy()
    rng = np.random.default_rng(seed)
    flipped = rng.choice(len(table), int(round(fraction * len(table))), replace=False)
    classes = catalog.classes
    for row in flipped:
        table.at[row, "label"] = rng.choice([c for c in classes if c != table.at[row, "label"]])
    catalog.table = table
    started = time.time()
    result = run_audit(catalog, root / "noise")
    seconds = time.time() - started
    truth = {int(row) for row in flipped}
    k = len(truth)
    scored, scores = result.scored_rows, result.label_scores
    top = {int(scored[i]) for i in np.argsort(-scores, kind="stable")[:k]}
    p_top, r_top = precision_recall(top, truth)
    flagged = {f.row for f in result.findings if f.kind == "label" and "confident learning" in f.evidence}
    p_flag, r_flag = precision_recall(flagged, truth)
    listed = {f.row for f in result.findings if f.kind == "label"}  # and the out-of-fold disagreements below them
    p_list, r_list = precision_recall(listed, truth)

    # the baseline: scikit-learn LogisticRegression, 5-fold out-of-fold probabilities on the same features
    from cleanlab.filter import find_label_issues
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    features = np.load(root / "noise" / "features.npy", mmap_mode="r")[scored]
    labels = np.array([classes.index(label) for label in table["label"].to_numpy()[scored]])
    started_baseline = time.time()
    probabilities = cross_val_predict(make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)), features,
                                      labels, cv=5, method="predict_proba")
    base_flagged = find_label_issues(labels, probabilities, return_indices_ranked_by="self_confidence")
    base_scores = 1 - probabilities[np.arange(len(labels)), labels]
    baseline_s = time.time() - started_baseline
    base_top = {int(scored[i]) for i in np.argsort(-base_scores, kind="stable")[:k]}
    bp_top, br_top = precision_recall(base_top, truth)
    bp_flag, br_flag = precision_recall({int(scored[i]) for i in base_flagged}, truth)
    random_top = set(random.Random(seed).sample(range(len(table)), k))
    rp, rr = precision_recall(random_top, truth)
    oof = result.summary["class_health"].get("oof_accuracy", float("nan"))
    return [
        f"planted label noise: {k} of {len(table):,} clothing-small training labels flipped (5 %, seed {seed}); "
        f"catalens audit (Lite0 features, 5-fold linear heads, cleanlab): top-{k} precision = recall **{p_top:.3f}**; "
        f"its {len(flagged)} cleanlab-flagged items: precision {p_flag:.3f}, recall {r_flag:.3f}; all {len(listed)} "
        f"listed label findings (the out-of-fold disagreements below them included): precision {p_list:.3f}, "
        f"recall {r_list:.3f}; out-of-fold "
        f"accuracy {oof:.3f}; audit {seconds:.0f} s",
        f"same run, baselines on the same features: cleanlab given scikit-learn LogisticRegression 5-fold "
        f"probabilities: top-{k} precision = recall **{bp_top:.3f}**, its {len(base_flagged)} flagged: precision "
        f"{bp_flag:.3f}, recall {br_flag:.3f} ({baseline_s:.0f} s); random ranking: top-{k} precision {rp:.3f}",
    ]


def small(root: Path, seeds: range = range(10), photos: int = 150, flip_counts: tuple = (1, 3, 10),
          backbone: str = "tf_efficientnet_lite0") -> list[str]:
    from cleanlab.filter import find_label_issues

    train = load_catalog(str(SHARED / "clothing-small"), split=False).split("train")
    rows, totals = [], {}
    for flips in flip_counts:
        for seed in seeds:
            rng = np.random.default_rng(1000 * flips + seed)
            catalog = train.subset(np.sort(rng.choice(len(train), photos, replace=False)))
            table = catalog.table.reset_index(drop=True)
            flipped = rng.choice(len(table), flips, replace=False)
            for row in flipped:
                table.at[row, "label"] = rng.choice([c for c in catalog.classes if c != table.at[row, "label"]])
            catalog.table = table
            result = run_audit(catalog, root / f"small-{flips}-{seed}", backbone=backbone)
            truth = {int(row) for row in flipped}
            listed = {f.row for f in result.findings if f.kind == "label"}
            labels = np.array([catalog.classes.index(label) for label in table["label"].to_numpy()[result.scored_rows]])
            present = np.unique(labels)  # cleanlab's default, given the same out-of-fold probabilities
            remap = np.full(len(catalog.classes), -1)
            remap[present] = np.arange(len(present))
            kept = result.probabilities[:, present] / result.probabilities[:, present].sum(1, keepdims=True)
            base = {int(result.scored_rows[i]) for i in np.flatnonzero(find_label_issues(remap[labels], kept))}
            for name, found in (("catalens", listed), ("cleanlab", base)):
                hits, listed_n, planted = totals.get((flips, name), (0, 0, 0))
                totals[(flips, name)] = (hits + len(found & truth), listed_n + len(found), planted + len(truth))
            print(flips, seed, len(listed & truth), len(listed), len(base & truth), len(base), flush=True)
    for flips in flip_counts:
        (hits, listed_n, planted), (b_hits, b_listed, _) = totals[(flips, "catalens")], totals[(flips, "cleanlab")]
        rows.append(f"small catalogs: {photos} clothing-small training photos with {flips} label(s) flipped, "
                    f"{len(seeds)} seeds ({seeds.start}-{seeds.stop - 1}; {planted} flips in all; {backbone} "
                    f"features): catalens audit's listed label findings: recall "
                    f"**{hits / planted:.3f}**, precision {hits / max(1, listed_n):.3f} ({listed_n} listed); same "
                    f"run, cleanlab's default find_label_issues on the same out-of-fold probabilities: recall "
                    f"{b_hits / planted:.3f}, precision {b_hits / max(1, b_listed):.3f} ({b_listed} listed)")
    return rows


def variant(image: Image.Image, kind: int, rng: random.Random) -> Image.Image:
    if kind == 0:  # re-encoded only (saved at a lower quality below)
        return image
    if kind == 1:  # resized
        scale = rng.uniform(0.5, 0.8)
        return image.resize((max(1, int(image.width * scale)), max(1, int(image.height * scale))))
    width, height = image.size  # cropped: 85-95 % of each side, off centre
    keep = rng.uniform(0.85, 0.95)
    w, h = int(width * keep), int(height * keep)
    left, top = rng.randint(0, width - w), rng.randint(0, height - h)
    return image.crop((left, top, left + w, top + h))


def duplicates(root: Path, seed: int, fraction: float = 0.05) -> list[str]:
    source = SHARED / "clothing-small"
    data = root / "clothing-dups"
    shutil.copytree(source, data)
    photos = sorted(p for p in data.rglob("*.jpg"))
    rng = random.Random(seed)
    chosen = rng.sample(photos, int(round(fraction * len(photos))))
    planted = {}
    for i, path in enumerate(chosen):
        with Image.open(path) as opened:
            image = variant(opened.convert("RGB"), i % 3, rng)
        copy = path.with_name(f"{path.stem}-copy{i}.jpg")
        image.save(copy, quality=rng.choice([60, 70, 80]))
        planted[str(copy.relative_to(data))] = str(path.relative_to(data))
    started = time.time()
    result = audit(str(data), root / "dups")
    seconds = time.time() - started
    items = result.catalog.table["ref"].astype(str).tolist()
    cluster_of = {items[f.row]: f.cluster for f in result.findings if f.kind == "duplicate"}
    found = sum(1 for copy, original in planted.items()
                if copy in cluster_of and cluster_of.get(original) == cluster_of[copy])
    members = {}
    for item, cluster in cluster_of.items():
        members.setdefault(cluster, []).append(item)
    pairs = sum(len(group) * (len(group) - 1) // 2 for group in members.values())
    planted_pairs = found
    by_kind = [sum(1 for i, (copy, original) in enumerate(planted.items()) if i % 3 == kind and copy in cluster_of
                   and cluster_of.get(original) == cluster_of[copy]) for kind in range(3)]
    per_kind = [sum(1 for i in range(len(planted)) if i % 3 == kind) for kind in range(3)]
    rows = [f"planted duplicates: {len(planted)} re-encoded/resized/cropped copies (5 %) added to clothing-small "
            f"({len(items):,} images): catalens audit recall **{found / len(planted):.3f}** (re-encoded "
            f"{by_kind[0]}/{per_kind[0]}, resized {by_kind[1]}/{per_kind[1]}, cropped {by_kind[2]}/{per_kind[2]}); "
            f"{pairs:,} pairs in its duplicate clusters, of which {planted_pairs} planted: pair precision over planted "
            f"pairs {planted_pairs / max(1, pairs):.3f} (the rest are duplicates clothing-small itself holds, or "
            f"false alarms: see report.html); leaks flagged {result.counts()['leak']}; **whole audit {seconds:.0f} s** "
            f"for {len(items):,} photos"]
    try:
        from imagededup.methods import PHash
    except ImportError:
        rows.append("imagededup: not installed here, not compared")
        return rows
    started = time.time()
    hasher = PHash(verbose=False)
    encodings = hasher.encode_images(image_dir=str(data), recursive=True)
    matches = hasher.find_duplicates(encoding_map=encodings, max_distance_threshold=10)
    base_seconds = time.time() - started
    base_found = sum(1 for copy, original in planted.items()
                     if any(Path(m).name == Path(original).name for m in matches.get(copy, [])))
    base_pairs = sum(len(v) for v in matches.values()) // 2
    rows.append(f"same run, imagededup PHash (max distance 10): recall **{base_found / len(planted):.3f}**, "
                f"{base_pairs:,} pairs ({base_seconds:.0f} s)")
    return rows


def scale_child(n: int, seed: int) -> None:
    """In a child process: the duplicate and outlier steps on n synthetic 1280-d feature vectors."""
    from catalens.apps.audit.findings import duplicate_pairs
    from catalens.models.neighbours import nearest, outlier_scores

    rng = np.random.default_rng(seed)
    folder = Path(tempfile.mkdtemp(prefix="catalens-audit-scale-"))
    features = np.lib.format.open_memmap(folder / "f.npy", mode="w+", dtype=np.float32, shape=(n, 1280))
    centres = rng.standard_normal((200, 1280)).astype(np.float32)
    for start in range(0, n, 10_000):
        part = centres[rng.integers(0, 200, 10_000)] + 0.8 * rng.standard_normal((10_000, 1280)).astype(np.float32)
        features[start:start + 10_000] = np.maximum(part, 0)  # like pooled ReLU features
    copies = rng.choice(n, n // 50, replace=False)
    originals = rng.choice(n, n // 50, replace=False)
    features[copies] = features[originals] + 0.02 * np.abs(rng.standard_normal((len(copies), 1280)))
    features.flush()
    started = time.time()
    rows = np.arange(n)
    similarities, neighbours = nearest(features, rows, k=10)
    pairs = duplicate_pairs([None] * n, np.zeros(n, np.uint64), np.zeros(n, bool), similarities, neighbours)
    z = outlier_scores(similarities)
    seconds = time.time() - started
    found = sum(1 for c, o in zip(copies, originals) if (min(c, o), max(c, o)) in pairs)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_mb": peak, "pairs": len(pairs), "found": found,
                      "planted": len(copies), "outliers": int((z > 5).sum())}))


def scale(n: int, seed: int) -> list[str]:
    output = subprocess.run([sys.executable, __file__, "--scale-child", str(n)], capture_output=True, text=True,
                            check=True).stdout
    r = json.loads(output.strip().splitlines()[-1])
    return [f"synthetic scale: {n:,} feature vectors (1280-d, generated, {r['planted']:,} planted near copies) "
            f"through the duplicate and outlier steps (faiss IVF after PCA to 256): **{r['seconds']:.1f} s**, peak "
            f"memory of the process **{r['peak_mb']:,.0f} MB** (the 512 MB of vectors included); {r['found']:,} of "
            f"{r['planted']:,} planted pairs found, {r['pairs']:,} pairs in all"]


def fashion(root: Path) -> list[str]:
    catalog = load_catalog(FASHION, split=False).split("test")
    result = run_audit(catalog, root / "fashion")
    OUT.mkdir(parents=True, exist_ok=True)
    for name in ("report.html", "report.md", "label_suspects.png", "issues.csv"):
        shutil.copy(root / "fashion" / name, OUT / f"audit_fashion_{name}")
    counts = result.counts()
    return [f"Fashion-MNIST test set (10,000 images, Lite0 features): {counts['label']} label suspects, "
            f"{counts['duplicate']} duplicate-cluster members, {counts['outlier']} outliers, "
            f"{counts['broken']} broken; "
            f"out-of-fold accuracy {result.summary['class_health'].get('oof_accuracy', float('nan')):.3f}; "
            f"{result.summary['seconds']:.0f} s; top-32 grid bench/out/audit_fashion_label_suspects.png"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["noise", "small", "duplicates", "scale", "fashion"], action="append")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale-items", type=int, default=100_000)
    parser.add_argument("--scale-child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--small-seeds", default="0-9", help="small: the seeds, FIRST-LAST [default: 0-9]")
    parser.add_argument("--small-flips", default="1,3,10", help="small: the flip counts [default: 1,3,10]")
    parser.add_argument("--backbone", default="tf_efficientnet_lite0", help="small: the audit's features")
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    first, last = (int(part) for part in args.small_seeds.split("-"))
    if args.scale_child:
        scale_child(args.scale_child, args.seed)
        return
    root = Path(tempfile.mkdtemp(prefix="catalens-audit-bench-"))
    wanted = args.only or ["noise", "small", "duplicates", "scale", "fashion"]
    rows = []
    for name in wanted:
        found = {"noise": lambda: noise(root, args.seed), "duplicates": lambda: duplicates(root, args.seed),
                 "small": lambda: small(root, range(first, last + 1),
                                        flip_counts=tuple(int(n) for n in args.small_flips.split(",")),
                                        backbone=args.backbone),
                 "scale": lambda: scale(args.scale_items, args.seed), "fashion": lambda: fashion(root)}[name]()
        for row in found:
            print(row, flush=True)
        rows += found
    if args.record:
        record(rows)


if __name__ == "__main__":
    os.environ.setdefault("CATALENS_NO_PROGRESS", "1")
    main()
