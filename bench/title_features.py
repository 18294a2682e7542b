"""Which TF-IDF set-up of titles catalens uses (issue 29): `catalens match` had characters 3-5 without a cap and
the `--text` heads characters 2-5 capped at 50,000; catalens now has one set-up, chosen here on choice splits
that no reported score uses:
- Shopee (../shared/data/shopee-titles/dev.csv): bench/match.py fits on one half of the label groups (seed 0)
  and scores the other; this bench splits the fitting half again (seed 1), fits the matcher (word + char + pHash)
  on one quarter and scores the other;
- fashion-products (articleType, 75 classes): the text-only head (class-balanced logistic regression, C chosen on
  a held-out part of train as catalens does) on catalens's seeded split, scored on the validation split.
Words (1-2 grams) are the same in every candidate. The candidate with the best mean of the Shopee F1 and the
fashion-products validation accuracy is chosen (macro-F1 shown beside it).

    python bench/title_features.py --record
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from common import SHARED, publish

CANDIDATES = {"characters 2-5, 50k cap (the --text heads')": ((2, 5), 50_000),
              "characters 3-5, no cap (match's)": ((3, 5), None)}


def shopee_quarters():
    import match as match_bench

    from catalens.apps.match import read_postings

    postings = read_postings(SHARED / "shopee-titles" / "dev.csv")
    fit_part, _ = match_bench.halves(postings, 0)  # bench/match.py scores the other half: never used here
    return match_bench.halves(fit_part, 1)


def fashion_split():
    import text as text_bench

    from catalens.data import DataOptions, load_catalog

    folder = Path(tempfile.mkdtemp(prefix="catalens-titles-"))
    spec = f"csv:{text_bench.write_catalog(folder, 'articleType')}"
    catalog = load_catalog(spec, DataOptions(images=str(SHARED / "fashion-products" / "images")))
    return catalog.split("train"), catalog.split("val"), len(catalog.classes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    from sklearn.metrics import f1_score

    from catalens.apps.match import fit_matcher, match
    from catalens.models import text
    from catalens.models.fusion import catalog_texts
    from catalens.models.linear_head import choose_sparse_C as choose_C
    from catalens.models.linear_head import sparse_logistic as logistic

    quarter_fit, quarter_scored = shopee_quarters()
    train, val, classes = fashion_split()
    train_texts, val_texts = catalog_texts(train.table, ["title"]), catalog_texts(val.table, ["title"])
    rows, means = [], {}
    for name, (ngrams, cap) in CANDIDATES.items():
        text.CHAR_NGRAMS, text.MAX_CHAR_FEATURES = ngrams, cap
        started = time.time()
        matcher = fit_matcher(quarter_fit, "choice quarter", ("word", "char", "phash"))
        shopee = match(quarter_scored, [matcher]).scores["combined"]
        vectorizer = text.TitleVectorizer.fit(train_texts)
        x = vectorizer.transform(train_texts)
        C, _ = choose_C(x, train.labels, classes, 0)
        weight, bias = logistic(x, train.labels, classes, C)
        predicted = (np.asarray(vectorizer.transform(val_texts) @ weight.T) + bias).argmax(1)
        accuracy = float(np.mean(predicted == val.labels))
        macro = f1_score(val.labels, predicted, labels=np.unique(val.labels), average="macro")
        means[name] = (shopee + accuracy) / 2
        rows.append(f"title TF-IDF, words 1-2 + {name}: Shopee choice quarter ({len(quarter_scored.ids)} postings) "
                    f"combined mean F1 {shopee:.4f}; fashion-products articleType validation ({len(val_texts):,} "
                    f"titles) text head accuracy {accuracy:.4f}, macro-F1 {macro:.4f} (C={C:g}); "
                    f"{vectorizer.width:,} features; {time.time() - started:.0f} s")
    chosen = max(means, key=means.get)
    rows.append(f"chosen (best mean of the two choice scores): words 1-2 + {chosen}")
    publish(rows, args.record)


if __name__ == "__main__":
    main()
