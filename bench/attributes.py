"""Several targets from one photo, and a category tree (issue 30), on fashion-products: 9,583 real catalog photos
with Fashion Product's own columns (styles.csv, mapped with --columns; images/ID.jpg).

One split for every row: catalens's seeded split by product, stratified on articleType (what `catalens train`
makes of this file), written into a `split` column so that every run below trains, chooses (C by cross-validation
on train, temperatures on validation) and is scored on the same photos; the test split is scored once per run.

Rows, in one run on the same machine (Lite0 ImageNet features, frozen, linear heads):
- one multi-target run, `--targets articleType,baseColour,gender,usage,season`, against one catalens run per
  target (`--targets T`) and one scikit-learn probe per target (LogisticRegression(C=0.5) on the same Lite0
  features): test accuracy and macro-F1 per target; wall time of the one run against the single runs together
  (targets: every target >= its probe and within 0.5 points of its single run; wall <= 0.5x). The multi-target run
  fits the five targets' heads only, like the single runs together: until 2026-12-04 it also fitted the tags,
  a sixth head that no single run fits (73 s of its 590 s on 2 EPYC cores);
- tags: `--tags style` (gender|usage|season as one multi-label column) against one probe per tag (micro-F1), fitted
  in the tree run below (the same features and training rows);
- the tree: `--targets articleType,subCategory,masterCategory --tree masterCategory,subCategory,articleType` (7
  of the 9,583 rows give an article type a second subCategory, e.g. one Flip Flops under Sandal: they are set to
  their article type's usual subCategory, and the run says which; without that, catalens finds only the tree
  masterCategory > articleType and `--tree` refuses the data in one line): the parents
  derived from the article-type head against runs trained for subCategory and masterCategory alone, and the
  answers at --min-confidence 0.9: coverage and accuracy at each depth (target: >= 98 % of the answered photos
  right at the depth answered, >= 90 % answered at some depth).

    python bench/attributes.py --record
    python bench/attributes.py --singles articleType --record   # one single run measured, the others estimated
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from common import SHARED, catalens, lite0_features, publish

PRODUCTS = SHARED / "fashion-products"
IMAGES = str(PRODUCTS / "images")
COLUMNS = "posting_id=id,image=id,title=productDisplayName"
ATTRIBUTES = ["articleType", "baseColour", "gender", "usage", "season"]
TREE = ["articleType", "subCategory", "masterCategory"]
MODEL = ["--model", "tf_efficientnet_lite0", "--pretrained", "--freeze", "backbone"]


def with_split(folder: Path, rows: int | None) -> Path:
    """styles.csv (or a seeded sample of `rows` of it, said on every row) with catalens's own seeded split
    (articleType, seed 0) as a `split` column."""
    from catalens.data import DataOptions, load_catalog
    from catalens.data.splits import ensure_splits

    source = folder / "unsplit.csv"
    styles = pd.read_csv(PRODUCTS / "styles.csv", dtype=str, keep_default_na=False)
    (styles.sample(rows, random_state=0) if rows else styles).to_csv(source, index=False)
    options = DataOptions(images=IMAGES, columns=COLUMNS, label_column="articleType")
    catalog = ensure_splits(load_catalog(f"csv:{source}", options, split=False), options.split_ratios,
                            seed=options.seed, val_fraction=options.val_fraction, group_by=options.group_by)
    split_of = dict(zip(catalog.table["item_id"].astype(str), catalog.table["split"]))
    styles = pd.read_csv(source, dtype=str, keep_default_na=False)
    styles["split"] = styles["id"].map(split_of).fillna("train")  # rows catalens could not use: never scored
    majority = styles.groupby("articleType")["subCategory"].agg(lambda values: values.value_counts().index[0])
    mended = styles["subCategory"] != styles["articleType"].map(majority)
    print(f"{int(mended.sum())} row(s) whose subCategory is not their article type's usual one, set to it (the tree "
          f"is declared with --tree, which refuses a value with two parents): "
          f"{styles.loc[mended, ['id', 'articleType', 'subCategory']].to_dict('records')}")
    styles.loc[mended, "subCategory"] = styles.loc[mended, "articleType"].map(majority)
    usage = styles["usage"].where(styles["usage"] != "NA", "")  # "NA": not given
    styles["style"] = styles["gender"] + "|" + usage + "|" + styles["season"]  # tags: truly several per photo
    path = folder / "styles.csv"
    styles.to_csv(path, index=False)
    return path


def run(path: Path, out: Path, targets: list[str], *extra: str, model: list[str] = MODEL) -> tuple[float, dict]:
    """(train seconds, test metrics) of one catalens run of `model` (kept: a bench run that stopped resumes here)."""
    done = out / "eval" / "metrics.json"
    if done.is_file() and (out / "seconds.txt").is_file():
        return float((out / "seconds.txt").read_text()), json.loads(done.read_text())
    shutil.rmtree(out, ignore_errors=True)
    seconds = catalens("train", "--data", f"csv:{path}", "--images", IMAGES, "--columns", COLUMNS, "--targets",
                       ",".join(targets), *extra, *model, "--out", str(out))
    catalens("evaluate", str(out), "--data", f"csv:{path}", "--split", "test", "--out", str(out / "eval"),
             "--no-leakage-check")
    (out / "seconds.txt").write_text(str(seconds))
    return seconds, json.loads(done.read_text())


def probes(path: Path, targets: list[str]) -> dict:
    """The practitioner's probe per target: LogisticRegression(C=0.5) on Lite0 features of train, test scored."""
    from sklearn.linear_model import LogisticRegression

    from catalens.data import DataOptions, load_catalog
    from catalens.data.targets import column, present
    from catalens.metrics import macro_f1

    catalog = load_catalog(f"csv:{path}", DataOptions(images=IMAGES, columns=COLUMNS, targets=",".join(targets),
                                                      tags="style"))
    train, test = catalog.split("train"), catalog.split("test")
    x, _, _ = lite0_features({"train": train, "test": test})
    found = {"tags": tag_probe(train, test, x)}
    for name in targets:
        values = {part: np.asarray(data.table[column(name)], object) for part, data in (("train", train),
                                                                                         ("test", test))}
        known = {part: present(values[part]) for part in values}
        classes = sorted(set(values["train"][known["train"]]))
        lookup = {value: i for i, value in enumerate(classes)}
        model = LogisticRegression(C=0.5, max_iter=3000).fit(
            x["train"][known["train"]], [lookup[value] for value in values["train"][known["train"]]])
        truth = np.array([lookup.get(value, -1) for value in values["test"][known["test"]]])
        predicted = model.predict(x["test"][known["test"]])
        found[name] = {"accuracy": float((predicted == truth).mean()),
                       "macro_f1": macro_f1(truth[truth >= 0], predicted[truth >= 0], len(classes))}
    return found


def tag_probe(train, test, x) -> float:
    """One LogisticRegression(C=0.5) per tag (the same tags as the run: in 5 or more training rows), given at 0.5:
    micro-F1 on test."""
    from collections import Counter

    from sklearn.linear_model import LogisticRegression

    from catalens.data.targets import TAGS_COLUMN, tag_matrix

    counts = Counter(tag for value in train.table[TAGS_COLUMN] for tag in value.split("|") if tag)
    names = sorted(tag for tag, count in counts.items() if count >= 5)
    y_train, y_test = (tag_matrix(data.table[TAGS_COLUMN], names) for data in (train, test))
    given = np.stack([LogisticRegression(C=0.5, max_iter=3000).fit(x["train"], y_train[:, i]).predict(x["test"])
                      for i in range(len(names))], 1)
    return 2 * float((given * y_test).sum()) / float(given.sum() + y_test.sum())


def score(entry: dict) -> str:
    return f"{entry['accuracy']:.4f} / {entry['macro_f1']:.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--record", action="store_true")
    parser.add_argument("--rows", type=int, help="A seeded sample of N rows of styles.csv (real photos; every row "
                        "says so): when the full set does not fit the time there is.")
    parser.add_argument("--singles", help="Only these single-target runs (comma-separated; default: every target "
                        "and tree level). On 2 cores a single run took 2-2.5 min, the multi-target run 4.5 min (Xeon, "
                        "2026-12-03; twice that on 2026-12-02's EPYC); the rows say which were not run and estimate "
                        "the wall time of the others.")
    args = parser.parse_args()
    folder = Path(tempfile.gettempdir()) / f"catalens-attributes-{args.rows or 'all'}"  # kept to resume
    folder.mkdir(exist_ok=True)
    path = with_split(folder, args.rows)
    multi_s, multi = run(path, folder / "multi", ATTRIBUTES)
    tree_s, tree = run(path, folder / "tree", TREE, "--tree", ",".join(reversed(TREE)), "--tags", "style")
    single_s, single = {}, {}
    for name in args.singles.split(",") if args.singles else ATTRIBUTES + TREE[1:]:
        single_s[name], single[name] = run(path, folder / f"single-{name}", [name])
    kept = folder / "probes.json"  # kept, like the runs: a bench run that stopped resumes here
    probe = json.loads(kept.read_text()) if kept.is_file() else probes(path, ATTRIBUTES)
    kept.write_text(json.dumps(probe))
    rows = []
    met = True
    for name in ATTRIBUTES:
        ours, base = multi["targets"][name], probe[name]
        alone = single[name]["targets"][name] if name in single else None
        ok = all(ours[key] >= base[key] and (alone is None or ours[key] >= alone[key] - 0.005)
                 for key in ("accuracy", "macro_f1"))
        met &= ok
        verdict = (">= probe" + (" and within 0.5 points of its own run" if alone else "; its own run not measured")
                   if ok else "TARGET NOT MET")
        rows.append(f"fashion-products test split ({ours['items']:,} photos with a {name}; "
                    f"{ours['missing']} without): {name} accuracy / macro-F1: multi-target run "
                    f"**{score(ours)}**, its own run {score(alone) if alone else 'not run'}, scikit-learn probe "
                    f"{score(base)}: {verdict}")
    tags = tree["tags"]
    rows.append(f"tags (gender, usage and season as one multi-label column, {len(tags['per_tag'])} tags): the tree "
                f"run's tags head (--tags style) micro-F1 **{tags['micro_f1']:.4f}** (macro-F1 "
                f"{tags['macro_f1']:.4f}, mAP {tags['map']:.4f}; "
                f"thresholds chosen on validation) vs one scikit-learn probe per tag at 0.5 "
                f"{probe['tags']:.4f}: {'>=' if tags['micro_f1'] >= probe['tags'] else 'BELOW'} the probe")
    measured = [name for name in ATTRIBUTES if name in single_s]
    together = sum(single_s[name] for name in measured) * len(ATTRIBUTES) / max(1, len(measured))
    how = (f"the {len(ATTRIBUTES)} single runs together" if len(measured) == len(ATTRIBUTES) else
           f"an ESTIMATE of the {len(ATTRIBUTES)} single runs together ({len(ATTRIBUTES)} x the {len(measured)} "
           f"measured: {', '.join(f'{name} {single_s[name]:.0f} s' for name in measured)}; every single run extracts "
           "the same features and cross-validates one head (a head with fewer classes costs less than "
           "articleType's 75, so the estimate is high)")
    rows.append(f"wall time: one run for {len(ATTRIBUTES)} targets **{multi_s:.0f} s** against {together:.0f} s for "
                f"{how} = **{multi_s / together:.2f}x** (target <= 0.5x); every target's quality target "
                f"{'met' if met else 'NOT met'}")
    for name in TREE[1:]:
        derived, own = tree["targets"][name], tree["targets"][name].get("own_head", {})
        alone = single[name]["targets"][name] if name in single else own  # a head for the level alone
        rows.append(f"tree {' > '.join(reversed(TREE))}: {name} derived from the article type head "
                    f"**{score(derived)}**, " + (f"a run for {name} alone {score(alone)}, " if name in single else "")
                    + f"the tree run's own {name} head (fitted for that level alone on the same features) "
                    f"{score(own) if own else 'n/a'}: derived "
                    f"{'>=' if derived['accuracy'] >= alone['accuracy'] else '<'} alone")
    at = next(row for row in tree["tree"]["thresholds"] if row["threshold"] == 0.9)
    depths = ", ".join(f"{level} {entry['answered']:,} ({entry['right'] / max(1, entry['answered']):.1%} right)"
                       for level, entry in at["levels"].items())
    rows.append(f"tree at --min-confidence 0.9 ({at['items']:,} test photos): answered at some depth "
                f"**{at['coverage']:.1%}**, right at the depth answered **{at['accuracy_answered']:.1%}**; by "
                f"depth: {depths} (targets >= 90 % answered, >= 98 % right)")
    rows.append(f"training seconds: tree run {tree_s:.0f}; single runs "
                + (", ".join(f"{name} {seconds:.0f}" for name, seconds in single_s.items()) or "none"))
    if args.rows:
        rows = [f"[seeded sample of {args.rows:,} of the 9,583 rows, real photos; not the full set] {row}"
                for row in rows]
    publish(rows, args.record)


if __name__ == "__main__":
    started = time.time()
    main()
    print(f"{time.time() - started:.0f} s")
