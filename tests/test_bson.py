"""BSON product dumps: the index against pymongo's decoder, damaged files, the category tree, sampling and
grouped splits, product-level aggregation and the submission file."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys

import bson
import numpy as np
import pytest
from conftest import shared

from catalens import CatalensError
from catalens.data import DataOptions, load_catalog
from catalens.data.bson_generate import generate_bson
from catalens.data.categories import CategoryTree
from catalens.data.sources.bson_index import build_index, open_index
from catalens.inference.products import average_by_product


@pytest.fixture(scope="module")
def dump(tmp_path_factory):
    """A labelled train file (real photos, real tree) and a test file without category_id."""
    root = tmp_path_factory.mktemp("bson")
    photos = shared("clothing-small/train")
    tree = shared("cdiscount/category_names.csv")
    generate_bson(root / "train.bson", photos, tree, products=600, classes=6, photos=120, seed=1)
    generate_bson(root / "test.bson", photos, tree, products=150, classes=6, photos=60, seed=2, test=True)
    return root


def decoded(path):
    with open(path, "rb") as handle:
        return list(bson.decode_file_iter(handle))


def test_index_matches_a_full_decode_and_is_reused(dump):
    index = open_index(dump / "train.bson", rebuild=True)
    documents = decoded(dump / "train.bson")
    records = index.records
    assert len(records) == len(documents) == 600
    assert records["id"].tolist() == [d["_id"] for d in documents]
    assert records["category"].tolist() == [d["category_id"] for d in documents]
    assert records["images"].tolist() == [len(d["imgs"]) for d in documents]
    assert set(records["images"]) <= {1, 2, 3, 4} and len(set(records["images"])) > 1
    with open(dump / "train.bson", "rb") as handle:  # offsets and lengths locate each document exactly
        for record, document in zip(records[::97], documents[::97]):
            handle.seek(record["offset"])
            assert bson.decode(handle.read(record["length"])) == document
    assert index.problems == [] and index.labelled
    assert open_index(dump / "train.bson").reused
    parallel = build_index(dump / "train.bson", dump / "parallel.idx", show_progress=False, threads=3)
    assert np.array_equal(parallel.records, records)


def test_test_file_without_category_is_unlabelled(dump):
    catalog = load_catalog(f"bson:{dump / 'test.bson'}", split=False)
    assert not open_index(dump / "test.bson").labelled
    assert catalog.classes == [] and set(catalog.table["label"]) == {""}
    assert catalog.table["product_id"].nunique() == 150


def test_index_rebuilt_when_the_file_changes(tmp_path):
    path = tmp_path / "a.bson"
    path.write_bytes(b"".join(bson.encode({"_id": i, "imgs": [{"picture": JPEG}], "category_id": 1}) for i in range(3)))
    assert len(open_index(path).records) == 3
    with open(path, "ab") as handle:
        handle.write(bson.encode({"_id": 3, "imgs": [{"picture": JPEG}], "category_id": 1}))
    index = open_index(path)
    assert not index.reused and len(index.records) == 4


def _jpeg() -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (24, 24), (200, 30, 30)).save(buffer, "JPEG")
    return buffer.getvalue()


JPEG = _jpeg()


def write_documents(path, documents, tree_rows=((1000000001, "A", "AA", "AAA"), (1000000002, "B", "BB", "BBB"))):
    path.write_bytes(b"".join(d if isinstance(d, bytes) else bson.encode(d) for d in documents))
    with open(path.with_name("category_names.csv"), "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["category_id", "category_level1", "category_level2", "category_level3"])
        writer.writerows(tree_rows)
    return path


def good(i, category=1000000001, images=1):
    return {"_id": i, "imgs": [{"picture": JPEG} for _ in range(images)], "category_id": category}


def test_damaged_files_report_each_problem_and_keep_every_valid_product(tmp_path):
    corrupted = bytearray(bson.encode(good(4)))
    corrupted[0:4] = (2**30).to_bytes(4, "little")  # a corrupted length prefix in the middle of the file
    documents = [
        good(1, images=2),
        {"_id": 2, "category_id": 1000000001},  # no imgs
        {"_id": 3, "imgs": [], "category_id": 1000000002},  # empty list
        bytes(corrupted),
        good(5, category=1000000002),
        {"_id": 6, "imgs": [{"picture": b"GIF89a not a jpeg"}, {"picture": JPEG}], "category_id": 1000000002},
        good(7, category=999),  # not in the tree
        good(8, images=3),
        bson.encode(good(9))[:-7],  # the last document cut short
    ]
    path = write_documents(tmp_path / "damaged.bson", documents)
    catalog = load_catalog(f"bson:{path}", split=False)
    reasons = " | ".join(p["reason"] for p in catalog.problems)
    for expected in ("no imgs field", "empty imgs list", "corrupted length prefix", "not JPEG bytes",
                     "category_id 999 is not in category_names.csv", "truncated document"):
        assert expected in reasons
    assert sorted(set(catalog.table["product_id"].astype(int))) == [1, 5, 6, 8]
    assert len(catalog) == 2 + 1 + 1 + 3  # product 6 keeps its one JPEG
    assert all(catalog.read(row).size == (24, 24) for row in range(len(catalog)))
    stats = json.loads(subprocess.run([sys.executable, "-m", "catalens.cli", "catalog", "stats", f"bson:{path}",
                                       "--json"], capture_output=True, text=True, check=True).stdout)
    assert stats["products"] == 4 and len(stats["problems"]) == len(catalog.problems)


def test_field_names_are_matched_exactly(tmp_path):
    """Look-alike keys are other fields: customer_id is not category_id, iXYs is not imgs, pXXXXXe is not
    picture. The index agrees with pymongo's decoder on what each product holds."""
    documents = [
        {"_id": 1, "customer_id": 1000000002, "imgs": [{"picture": JPEG}], "category_id": 1000000001},
        {"_id": 2, "customer_id": 1000000002, "imgs": [{"picture": JPEG}]},  # no category_id at all
        {"_id": 3, "iXYs": [{"picture": JPEG}], "imgs": [{"picture": JPEG}, {"pXXXXXe": JPEG}],
         "category_id": 1000000002},
        {"_id": 4, "ixxs": [{"picture": JPEG}], "category_id": 1000000001},  # no imgs at all
    ]
    path = write_documents(tmp_path / "lookalikes.bson", documents)
    catalog = load_catalog(f"bson:{path}", split=False)
    table = catalog.table
    assert sorted(set(table["product_id"].astype(int))) == [1, 3]
    labels = dict(zip(table["product_id"].astype(int), table["label"], strict=False))
    assert labels == {1: "1000000001", 3: "1000000002"}
    assert (table["product_id"].astype(int) == 3).sum() == 1  # the element without `picture` is not a JPEG
    reasons = " | ".join(p["reason"] for p in catalog.problems)
    assert "no category_id" in reasons and "no imgs field" in reasons


def test_levels_follow_the_real_tree(dump):
    tree = CategoryTree.read(shared("cdiscount/category_names.csv"))
    assert len(tree.table) == 5270 and tree.table["level1"].nunique() == 49
    assert tree.labels_for(np.array([1000012764]), 1)[0] == "AMENAGEMENT URBAIN - VOIRIE"
    assert tree.labels_for(np.array([1000012764]), 2)[0] == "AMENAGEMENT URBAIN"
    assert tree.labels_for(np.array([1000012764]), 3)[0] == "1000012764"
    level2 = tree.class_names(2)
    assert level2.nunique() == tree.table.groupby(["level1", "level2"]).ngroups  # shared names made distinct
    for level in (1, 2, 3):
        catalog = load_catalog(f"bson:{dump / 'train.bson'}", DataOptions(level=level), split=False)
        categories = open_index(dump / "train.bson").records["category"]
        expected = {str(c) if level == 3 else tree.table.loc[c, f"level{level}"] for c in categories}
        assert set(catalog.classes) <= expected | set(level2) and catalog.hierarchy
        assert all(f"level{level}" in entry for entry in catalog.hierarchy.values())


def test_targets_are_the_category_levels_and_form_the_tree(dump, tmp_path):
    """--targets level3,level2,level1 on a dump: the first is the label, each level a target column per image (the
    product's), and the levels form the tree that training finds; mistakes are one line."""
    from catalens.data.targets import column, detect_tree

    tree = CategoryTree.read(shared("cdiscount/category_names.csv"))
    spec = f"bson:{dump / 'train.bson'}"
    catalog = load_catalog(spec, DataOptions(targets="level3,level2,level1"), split=False)
    table = catalog.table
    assert list(table["label"]) == list(load_catalog(spec, split=False).table["label"])  # level 3: category ids
    leaf = table["label"].astype("int64").to_numpy()
    for level in (1, 2, 3):
        assert list(table[column(f"level{level}")]) == list(tree.labels_for(leaf, level))
    upper = load_catalog(spec, DataOptions(targets="level2,level1"), split=False)
    assert upper.classes == sorted(set(upper.table[column("level2")])) and upper.level == 2
    with pytest.raises(CatalensError, match="category levels level1, level2, level3 .*; category is not one"):
        load_catalog(spec, DataOptions(targets="level3,category"), split=False)
    with pytest.raises(CatalensError, match="needs a labelled BSON dump"):
        load_catalog(f"bson:{dump / 'test.bson'}", DataOptions(targets="level3"), split=False)
    rows = [(1000000001, "A", "AA", "x"), (1000000002, "A", "AA", "y"), (1000000003, "A", "AB", "z"),
            (1000000004, "B", "BA", "w")]  # 4 leaves under 3 level-2 names under 2 level-1 names
    path = write_documents(tmp_path / "t.bson", [good(i, category=rows[i % 4][0]) for i in range(8)], rows)
    hand_made = load_catalog(f"bson:{path}", DataOptions(targets="level3,level2,level1"), split=False).table
    values = {name: hand_made[column(name)].to_numpy(object) for name in ("level3", "level2", "level1")}
    assert list(values["level2"]) == ["AA", "AA", "AB", "BA"] * 2
    assert detect_tree(["level3", "level2", "level1"], values) == ["level1", "level2", "level3"]
    from types import SimpleNamespace

    from catalens.inference.records import write_records

    entry = {"label": "x", "probability": 0.9, "top_k": [{"label": "x", "probability": 0.9}]}
    record = {"input": "1", "label": "x", "probability": 0.9, "images": 2, "error": "",
              "top_k": [{"label": "x", "probability": 0.9, "level1": "A", "level2": "AA"}],
              "targets": {"level3": entry, "level2": {**entry, "label": "AA"}, "level1": {**entry, "label": "A"}}}
    model = SimpleNamespace(card=SimpleNamespace(hierarchy={"x": {"level1": "A", "level2": "AA"}}))
    handle = io.StringIO()
    write_records(handle, "csv", [record], model, with_ids=False, per_product=True)
    header, row = handle.getvalue().splitlines()
    assert header.split(",") == ["input", "label", "probability", "images", "top_k", "level3", "level3_probability",
                                 "level2", "level2_probability", "level1", "level1_probability", "error"]
    assert row.split(",")[5:11] == ["x", "0.9", "AA", "0.9", "A", "0.9"]  # each level once: the target's answer
    path.with_name("category_names.csv").unlink()
    with pytest.raises(CatalensError, match="need the category tree"):
        load_catalog(f"bson:{path}", DataOptions(targets="level3,level1"), split=False)
    assert load_catalog(f"bson:{path}", DataOptions(targets="level3"), split=False).classes == [
        "1000000001", "1000000002", "1000000003", "1000000004"]


def test_sampling_filters_and_grouped_splits(dump):
    spec = f"bson:{dump / 'train.bson'}"
    options = DataOptions(sample=300, min_per_class=20, max_per_class=60, seed=3)
    catalog = load_catalog(spec, options)
    per_class = catalog.table.groupby("label")["product_id"].nunique()
    assert per_class.max() <= 60 and per_class.min() >= 1
    assert catalog.table["product_id"].nunique() <= 300
    assert catalog.table.groupby("product_id")["split"].nunique().max() == 1  # products split as wholes
    assert load_catalog(spec, options).table.equals(catalog.table)  # seeded


def test_levels_above_3_need_the_tree(tmp_path):
    path = write_documents(tmp_path / "t.bson", [good(1), good(2, category=1000000002)])
    assert load_catalog(f"bson:{path}", DataOptions(level=1), split=False).classes == ["A", "B"]
    path.with_name("category_names.csv").unlink()
    assert load_catalog(f"bson:{path}", split=False).classes == ["1000000001", "1000000002"]
    with pytest.raises(CatalensError, match="--level 2 needs the category tree"):
        load_catalog(f"bson:{path}", DataOptions(level=2), split=False)


def test_submission_is_one_row_per_product_and_resumes(dump, tmp_path):
    import catalens
    from catalens.inference.submission import write_submission
    from catalens.rundir.run import Model

    run = catalens.train(data=f"bson:{dump / 'train.bson'}", model="cnn3", out=str(tmp_path / "run"), epochs=1,
                         input_size=32, workers=0).run_dir
    model = Model.load(run)
    assert model.card.level == 3 and model.card.hierarchy[model.classes[0]]["category_id"]
    full = tmp_path / "full.csv"
    summary = write_submission(model, f"bson:{dump / 'test.bson'}", full, chunk_products=64)
    lines = full.read_text().splitlines()
    ids = open_index(dump / "test.bson").records["id"].tolist()
    assert lines[0] == "_id,category_id" and [int(line.split(",")[0]) for line in lines[1:]] == ids
    assert {int(line.split(",")[1]) for line in lines[1:]} <= {int(name) for name in model.classes}
    assert summary.written == 150 and not summary.unreadable
    cut = tmp_path / "cut.csv"  # an interrupted run: 70 rows and half of the next one
    text = full.read_text()
    cut.write_text(text[: len("\n".join(lines[:72])) - 3])
    resumed = write_submission(model, f"bson:{dump / 'test.bson'}", cut, chunk_products=64)
    assert resumed.resumed_from == 70 and resumed.written == 80 and cut.read_text() == text
    with pytest.raises(CatalensError, match="another BSON file"):
        write_submission(model, f"bson:{dump / 'train.bson'}", cut)
    odd = tmp_path / "odd.bson"  # a product whose only picture is not a JPEG still gets its row, and is listed
    odd.write_bytes(b"".join(bson.encode({"_id": i, "imgs": [{"picture": JPEG if i != 2 else b"GIF89a"}]})
                             for i in range(1, 4)))
    listed = write_submission(model, f"bson:{odd}", tmp_path / "odd.csv")
    rows = (tmp_path / "odd.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in rows[1:]] == ["1", "2", "3"] and listed.unreadable == ["2"]
    assert (tmp_path / "odd.csv.unreadable.txt").read_text() == "2\n"
    product_rows = subprocess.run([sys.executable, "-m", "catalens.cli", "predict", str(run),
                                   f"bson:{dump / 'test.bson'}", "-k", "4", "--format", "jsonl"],
                                  capture_output=True, text=True, check=True).stdout.splitlines()
    first = json.loads(product_rows[0])
    assert len(product_rows) == 150 and first["input"] == str(ids[0]) and len(first["top_k"]) == 4
    assert {"level1", "level2", "level3", "category_id"} <= set(first["top_k"][0])


def test_submission_needs_a_leaf_level_model(dump, tmp_path):
    import catalens
    from catalens.inference.submission import write_submission
    from catalens.rundir.run import Model

    run = catalens.train(data=f"bson:{dump / 'train.bson'}", level=1, model="cnn3", out=str(tmp_path / "run"),
                         epochs=1, input_size=32, workers=0).run_dir
    with pytest.raises(CatalensError, match="--level 3"):
        write_submission(Model.load(run), f"bson:{dump / 'test.bson'}", tmp_path / "s.csv")


def test_average_by_product_on_hand_made_probabilities():
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6], [0.3, 0.7]], np.float32)
    products, mean, counts = average_by_product(["b", "a", "b", "c"], probabilities)
    assert list(products) == ["b", "a", "c"] and counts.tolist() == [2, 1, 1]
    np.testing.assert_allclose(mean, [[0.65, 0.35], [0.2, 0.8], [0.3, 0.7]], rtol=1e-6)


def test_cli_generates_indexes_and_samples_a_dump(tmp_path):
    def catalens(*args):
        return subprocess.run([sys.executable, "-m", "catalens.cli", *map(str, args)], capture_output=True,
                              text=True)

    path = tmp_path / "cli.bson"
    made = catalens("bson", "generate", path, "--from", shared("clothing-small/validation"), "--categories",
                    shared("cdiscount/category_names.csv"), "--products", 40, "--classes", 3)
    assert made.returncode == 0 and "40 products" in made.stderr
    assert (tmp_path / "category_names.csv").is_file()  # the tree beside the dump, as in the real layout
    indexed = catalens("bson", "index", path)
    assert indexed.returncode == 0 and "40 products" in indexed.stderr and "indexed in" in indexed.stderr
    assert "index reused" in catalens("bson", "index", path).stderr
    stats = json.loads(catalens("catalog", "stats", f"bson:{path}", "--json", "--sample", 10, "--level", 1,
                                "--no-verify").stdout)
    assert stats["products"] == 10 and stats["problems"] == []
    missing = catalens("catalog", "stats", f"bson:{tmp_path / 'nope.bson'}")
    assert missing.returncode == 2 and missing.stderr.startswith("error: BSON file")
    assert "Traceback" not in missing.stderr
