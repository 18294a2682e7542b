"""`catalens match` on real Shopee postings (issue 19): ../shared/data/shopee-titles/dev.csv, 1,499 postings in 500
complete label groups, titles and image_phash (no image files).

The label groups are split in two halves (seeded): the matcher's coefficients and thresholds are fitted on one,
and every score is on the other, whose rows were never used to choose anything. Rows: pHash only (the baseline),
each text signal alone, combined (target >= 0.85 mean F1), and, as a reference, TF-IDF with the threshold chosen
on the scored half itself (an oracle). `--write-default` stores the fitted matchers as catalens's default
(catalens/apps/match/default_matcher.json): one with the sentence encoder, one without.

Scale: 100,000 synthetic postings (titles made by mutating the real ones, random hashes; generated, labelled so)
through index build and query with the TF-IDF and pHash signals: seconds and peak memory (targets <= 60 s, 2 GB),
in a child process; and the sentence encoder's titles/s.

    python bench/match.py --write-default --record
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import time

import numpy as np
import pandas as pd
from common import SHARED, publish

from catalens.apps.match import (
    DEFAULT_MATCHER,
    Postings,
    choose,
    fit_matcher,
    match,
    mean_f1,
    pair_signals,
    read_postings,
    signal_vectors,
    top_neighbours,
)


def halves(postings: Postings, seed: int) -> tuple[Postings, Postings]:
    groups = sorted(set(postings.groups))
    random.Random(seed).shuffle(groups)
    fit_groups = set(groups[: len(groups) // 2])

    def part(chosen):
        rows = [i for i, g in enumerate(postings.groups) if (g in fit_groups) == chosen]
        return Postings([postings.ids[i] for i in rows], [postings.titles[i] for i in rows], postings.phash[rows],
                        postings.has_phash[rows], [postings.groups[i] for i in rows], [])

    return part(True), part(False)


def oracle(postings: Postings, name: str) -> float:
    vectors = signal_vectors(postings, (name,))
    pairs = top_neighbours(vectors[name], 30)
    values = pair_signals(postings, vectors, pairs)
    n = len(postings.ids)
    return max(mean_f1(choose(n, pairs, values[name], t, 1.1), postings.groups) for t in np.arange(0.05, 0.96, 0.01))


def scale_child(n: int) -> None:
    dev = pd.read_csv(SHARED / "shopee-titles" / "dev.csv", dtype=str, keep_default_na=False)
    rng = random.Random(0)
    words = " ".join(dev["title"]).split()
    titles = []
    for _ in range(n):
        base = rng.choice(dev["title"].tolist()).split()
        base[rng.randrange(len(base))] = rng.choice(words)
        titles.append(" ".join(base + [rng.choice(words)]))
    hashes = np.array([rng.getrandbits(64) for _ in range(n)], dtype=np.uint64)
    postings = Postings([f"p{i}" for i in range(n)], [t.lower() for t in titles], hashes, np.ones(n, bool), None)
    from catalens.apps.match import Matcher

    matchers = [m for m in Matcher.load(DEFAULT_MATCHER) if "sentence" not in m.signals]
    started = time.time()
    result = match(postings, matchers)
    seconds = time.time() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_mb": peak, "pairs": result.pairs}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--write-default", action="store_true")
    parser.add_argument("--scale", type=int, default=100_000)
    parser.add_argument("--scale-child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    if args.scale_child:
        scale_child(args.scale_child)
        return
    path = SHARED / "shopee-titles" / "dev.csv"
    postings = read_postings(path)
    fit_part, held = halves(postings, args.seed)
    started = time.time()
    with_sentence = fit_matcher(fit_part, f"shopee-titles/dev.csv, half of its label groups (seed {args.seed})")
    without = fit_matcher(fit_part, with_sentence.trained_on, ("word", "char", "phash"))
    fit_s = time.time() - started
    if args.write_default:
        DEFAULT_MATCHER.write_text(json.dumps([json.loads(m.to_json()) for m in (with_sentence, without)], indent=2))
    rows = []
    for matcher in (with_sentence, without):
        result = match(held, [matcher])
        scores = ", ".join(f"{name} {score:.3f}" for name, score in result.scores.items() if name != "combined")
        rows.append(f"Shopee dev.csv, scored on the held-out half ({len(held.ids)} postings, "
                    f"{len(set(held.groups))} groups; fitted on the other half in {fit_s:.0f} s): signals "
                    f"{'+'.join(matcher.signals)}: **combined {result.scores['combined']:.3f}** mean F1; single "
                    f"signals at their own fitted thresholds: {scores}; {result.seconds:.1f} s")
    rows.append(f"same held-out half, reference (threshold chosen on the scored rows, an oracle): TF-IDF words "
                f"{oracle(held, 'word'):.3f}, TF-IDF characters {oracle(held, 'char'):.3f}")
    started = time.time()
    encoded = signal_vectors(postings, ("sentence",))
    if "sentence" in encoded:
        speed = len(postings.ids) / (time.time() - started)
        rows.append(f"sentence encoder (all-MiniLM-L6-v2, packaged): {speed:,.0f} titles/s on {os.cpu_count()} "
                    "cores (model load included)")
    output = subprocess.run([sys.executable, __file__, "--scale-child", str(args.scale)], capture_output=True,
                            text=True, check=True).stdout
    r = json.loads(output.strip().splitlines()[-1])
    rows.append(f"scale: {args.scale:,} synthetic postings (titles mutated from the real ones, random hashes; "
                f"generated) through index build and query with TF-IDF words and characters and pHash: "
                f"**{r['seconds']:.1f} s**, peak memory **{r['peak_mb']:,.0f} MB**, {r['pairs']:,} candidate pairs")
    publish(rows, args.record)


if __name__ == "__main__":
    os.environ.setdefault("CATALENS_NO_PROGRESS", "1")
    main()
