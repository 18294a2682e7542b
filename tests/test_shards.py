"""`catalens shard`: catalog -> tar shards -> catalog gives the same items, labels, splits, products and pixels,
for a folder with splits (original JPEG bytes), Fashion-MNIST (in-memory images as PNG) and a BSON dump; the
shards are plain tars that any tar reader streams; broken images are listed, not fatal."""

import json
import tarfile

import numpy as np
import pytest
from conftest import add_bad_files, make_folder, run_cli, shared

from catalens.data import DataOptions, load_catalog
from catalens.data.bson_generate import generate_bson
from catalens.data.shards import write_shards

COLUMNS = ["item_id", "product_id", "label", "split", "title", "description"]


def same_catalog(original, copy, rows) -> None:
    assert copy.classes == original.classes and copy.channels == original.channels
    assert copy.table[COLUMNS].equals(original.table[COLUMNS].astype(str))
    for row in rows:
        assert np.array_equal(np.asarray(copy.read(row)), np.asarray(original.read(row))), row


def test_folder_with_splits_round_trips_with_its_original_bytes(tmp_path):
    data = make_folder(tmp_path / "shop", per_class=8, split_layout=True)
    summary = write_shards(str(data), tmp_path / "shards", size="8KB")
    assert summary.shards > 2 and summary.problems == 0
    original, copy = load_catalog(str(data), split=False), load_catalog(f"shards:{tmp_path / 'shards'}", split=False)
    same_catalog(original, copy, range(len(original)))
    with tarfile.open(tmp_path / "shards" / "shard-000000.tar") as archive:  # WebDataset layout: KEY.ext pairs
        names = archive.getnames()
        assert names[0].rsplit(".", 1)[1] in ("jpg", "png") and names[1] == names[0].rsplit(".", 1)[0] + ".json"
        first = original.table.iloc[0]
        assert archive.extractfile(names[0]).read() == (data / first["ref"]).read_bytes()
        assert json.loads(archive.extractfile(names[1]).read())["label"] == first["label"]


def test_fashion_mnist_and_a_bson_dump_round_trip(tmp_path):
    options = DataOptions(sample=300)
    write_shards(f"fashion-mnist:{shared('fashion-mnist')}", tmp_path / "fm", options=options)
    original = load_catalog(f"fashion-mnist:{shared('fashion-mnist')}", options, split=False)
    same_catalog(original, load_catalog(f"shards:{tmp_path / 'fm'}", split=False), range(0, 300, 7))
    dump = tmp_path / "train.bson"
    generate_bson(dump, shared("clothing-small/train"), shared("cdiscount/category_names.csv"), products=60,
                  classes=3, photos=30, seed=4)
    write_shards(f"bson:{dump}", tmp_path / "bs", size="64KB")
    original = load_catalog(f"bson:{dump}", split=False)
    copy = load_catalog(f"shards:{tmp_path / 'bs'}", split=False)
    same_catalog(original, copy, range(0, len(original), 5))
    assert copy.hierarchy == original.hierarchy and copy.table["product_id"].nunique() == 60


def test_broken_images_are_listed_and_the_cli_says_what_it_wrote(tmp_path):
    data = make_folder(tmp_path / "shop", per_class=3)
    add_bad_files(data)
    result = run_cli("shard", str(data), "--out", str(tmp_path / "s"), "--size", "1MB")
    assert result.returncode == 0, result.stderr
    assert "9 images in 1 shard(s)" in result.stderr and "unreadable (problems.csv)" in result.stderr
    listed = (tmp_path / "s" / "problems.csv").read_text().splitlines()
    assert listed[0] == "ref,reason" and sorted(line.split(",")[0].split("/")[-1] for line in listed[1:]) == [
        "empty.jpg", "notes.jpg", "truncated.jpg"], listed
    again = run_cli("shard", str(data), "--out", str(tmp_path / "s"))
    assert again.returncode == 2 and "not empty" in again.stderr
    missing = run_cli("catalog", "stats", f"shards:{tmp_path / 'nowhere'}")
    assert missing.returncode == 2 and "catalens shard DATA --out DIR" in missing.stderr


@pytest.mark.parametrize("size", ["0", "tiny"])
def test_bad_sizes_are_one_line(tmp_path, size):
    data = make_folder(tmp_path / "shop", per_class=1)
    result = run_cli("shard", str(data), "--out", str(tmp_path / "s"), "--size", size)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
