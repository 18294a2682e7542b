"""Does `--resize pad` (the whole photo, aspect kept, padded with its border colour) help ordinary classification
on real photos, against the default centre crop (issue 27)? Same model (Lite0 head), same data and seeds.

- clothing-small: its validation/ folder held out as the test split; catalens carves its validation split from
  train/ (bench/common.py clothing_small_with_test);
- fashion-products (articleType, 9,583 real catalog photos): catalens's seeded split by product.

The geometry is chosen on each data set's validation split; the test split is scored once, for the chosen one.

    python bench/geometry.py --record
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from common import REPO, SHARED, catalens, choose, clothing_small_with_test, final, final_row, record, validation_row

HEAD = ["--model", "tf_efficientnet_lite0", "--pretrained", "--freeze", "backbone"]
GEOMETRIES = ("crop", "pad")


def fashion_products(folder: Path) -> tuple[str, list[str]]:
    import pandas as pd

    styles = pd.read_csv(SHARED / "fashion-products" / "styles.csv", dtype=str, keep_default_na=False)
    path = folder / "fashion-products.csv"
    pd.DataFrame({"posting_id": styles["id"], "image": styles["id"] + ".jpg",
                  "label_group": styles["articleType"]}).to_csv(path, index=False)
    return f"csv:{path}", ["--images", str(SHARED / "fashion-products" / "images")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    datasets = {"clothing-small": (clothing_small_with_test("geometry-clothing-data"), []),
                "fashion-products articleType": fashion_products(Path(tempfile.mkdtemp(prefix="catalens-geometry-")))}
    rows = []
    for name, (data, extra) in datasets.items():
        scores, runs = {}, {}
        for geometry in GEOMETRIES:
            run = REPO / "bench" / "out" / f"geometry-{name.split()[0]}-{geometry}"
            shutil.rmtree(run, ignore_errors=True)
            seconds = catalens("train", "--data", data, *extra, *HEAD, "--resize", geometry, "--out", str(run))
            card = json.loads((run / "model_card.json").read_text())
            scores[geometry], runs[geometry] = card["validation"]["accuracy"], run
            rows.append(validation_row(f"{name}, Lite0 head, `--resize {geometry}`: validation accuracy "
                                       f"**{scores[geometry]:.4f}** ({card['validation_data'].get('items', '?')} "
                                       f"photos); train {seconds:.0f} s", "the split the geometry is chosen on"))
        chosen = choose(scores)
        run = runs[chosen]

        def score(run=run, data=data):  # the card holds --images: evaluate reads the same files
            catalens("evaluate", str(run), "--data", data, "--split", "test", "--out", str(run / "test"))
            return json.loads((run / "test" / "metrics.json").read_text())

        metrics = final("geometry", data, chosen, score)
        rows.append(final_row(f"{name}, Lite0 head, chosen `--resize {chosen}`: test accuracy "
                              f"**{metrics['accuracy']:.4f}**, macro F1 {metrics['macro_f1']:.4f} "
                              f"({metrics['items']} photos)"))
        print("\n".join(rows[-3:]), flush=True)
    if args.record:
        record(rows)


if __name__ == "__main__":
    main()
