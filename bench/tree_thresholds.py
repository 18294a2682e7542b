"""The tree's --min-confidence for a share of right answers, chosen on validation, scored on test once (issue 30).

On the tree run that bench/attributes.py trained (fashion-products, masterCategory > subCategory > articleType),
what training now stores in the card (`tree_thresholds`: Targets.threshold_for on the validation split: the lowest
threshold from 0.5 to 0.995, by 0.005, from which every threshold gets at least 98 % / 99 % of the answers right)
and what evaluate reports for it on the test split (`tree.for_accuracy`), computed here by the same functions for a
run trained before the card held them.

    python bench/attributes.py --singles articleType    # trains the tree run first
    python bench/tree_thresholds.py --record
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from attributes import COLUMNS, IMAGES, TREE
from common import publish

from catalens.data import DataOptions, load_catalog
from catalens.data.targets import column
from catalens.loading.batches import make_batches
from catalens.models.targets import ACCURACY_WANTED
from catalens.rundir.run import Model


def tree_probabilities(model: Model, part) -> tuple[dict, dict]:
    """The run's tree probabilities of a split's photos, as predict computes them, and each level's true values."""
    found: dict = {}
    with torch.inference_mode():
        for batch in make_batches(part, model.preprocessing, 64):
            for name, values in model.target_probabilities(batch.images)[1].items():
                found.setdefault(name, []).append(values)
    truths = {level: part.table[column(level)].to_numpy(object) for level in model.targets.tree}
    return {name: np.concatenate(values) for name, values in found.items()}, truths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    folder = Path(tempfile.gettempdir()) / "catalens-attributes-all"
    if not (folder / "tree" / "model_card.json").is_file():
        parser.error(f"no tree run in {folder / 'tree'}: run `python bench/attributes.py --singles articleType` first")
    model = Model.load(folder / "tree")
    catalog = load_catalog(f"csv:{folder / 'styles.csv'}",
                           DataOptions(images=IMAGES, columns=COLUMNS, targets=",".join(TREE)))
    val = tree_probabilities(model, catalog.split("val"))
    test = tree_probabilities(model, catalog.split("test"))
    rows = []
    for wanted in ACCURACY_WANTED:
        chosen = model.targets.threshold_for(*val, wanted)
        if chosen is None:
            rows.append(f"tree answers for {wanted:.0%} right (fashion-products, Lite0 tree run): no --min-confidence "
                        "up to 0.995 gets there on the validation split")
            continue
        scored = model.targets.answer_counts(*test, (chosen["threshold"],))[0]
        by_depth = {level: entry["answered"] for level, entry in scored["levels"].items()}
        rows.append(f"tree answers for {wanted:.0%} right (fashion-products, Lite0 tree run): --min-confidence "
                    f"{chosen['threshold']:g}, the lowest that got there on the validation split (974 photos: "
                    f"answered {chosen['coverage']:.1%}, right {chosen['accuracy']:.1%}); test split, scored once at "
                    f"it ({scored['items']:,} photos): **answered {scored['coverage']:.1%}, right at the depth "
                    f"answered {scored['accuracy_answered']:.1%}** (by depth {by_depth})")
    publish(rows, args.record)


if __name__ == "__main__":
    main()
