import numpy as np
import pandas as pd
import pytest

from catalens import CatalensError
from catalens.data.catalog import ArrayReader, Catalog
from catalens.data.labels import apply_mapping, filter_classes
from catalens.data.sources.idx import FASHION_MNIST_CLASSES
from catalens.data.splits import assign_splits, ensure_splits, stratified_sample


def catalog_of(labels, products=None) -> Catalog:
    n = len(labels)
    records = {"ref": list(range(n)), "label": list(labels)}
    if products is not None:
        records["product_id"] = list(products)
    # distinct images: identical ones would be grouped as near-identical photos by the splits (splits.py)
    arrays = np.random.default_rng(0).integers(0, 255, (n, 4, 4), dtype=np.uint8)
    return Catalog.from_records(records, classes=sorted(set(labels)), reader=ArrayReader(arrays), source="test")


def test_builtin_fashion_mnist_groups():
    labels = [name for name in FASHION_MNIST_CLASSES for _ in range(3)]
    catalog = catalog_of(labels)
    catalog.classes = list(FASHION_MNIST_CLASSES)
    mapped = apply_mapping(catalog, "fashion-mnist-groups")
    assert mapped.classes == ["upper part", "bottom part", "one piece", "footwear", "bags"]
    assert mapped.class_counts() == {"upper part": 12, "bottom part": 3, "one piece": 3, "footwear": 9, "bags": 3}


def test_mapping_file_renames_merges_and_drops(tmp_path):
    catalog = catalog_of(["a"] * 3 + ["b"] * 2 + ["c"] * 4 + ["d"])
    path = tmp_path / "map.yaml"
    path.write_text("ab: [a, b]\nc: sea\nd: null\n")
    mapped = apply_mapping(catalog, str(path))
    assert mapped.class_counts() == {"ab": 5, "sea": 4}
    assert len(mapped) == 9
    json_path = tmp_path / "map.json"
    json_path.write_text('{"x": ["a", "zzz"]}')
    with pytest.raises(CatalensError, match="unknown class 'zzz'"):
        apply_mapping(catalog, str(json_path))
    with pytest.raises(CatalensError, match="neither a file nor a built-in"):
        apply_mapping(catalog, "no-such-mapping")


def test_class_filters():
    catalog = catalog_of(["a"] * 10 + ["b"] * 5 + ["c"] * 2)
    assert filter_classes(catalog, min_per_class=3).classes == ["a", "b"]
    assert filter_classes(catalog, top_classes=1).classes == ["a"]
    capped = filter_classes(catalog, max_per_class=4, seed=1)
    assert capped.class_counts() == {"a": 4, "b": 4, "c": 2}
    with pytest.raises(CatalensError, match="no class is left"):
        filter_classes(catalog, min_per_class=100)


def test_splits_are_stratified_grouped_and_seeded():
    labels = ["a"] * 400 + ["b"] * 200
    products = [f"p{i // 2}" for i in range(600)]  # two images per product
    catalog = catalog_of(labels, products)
    first, _ = assign_splits(catalog, seed=3)
    again, _ = assign_splits(catalog, seed=3)
    assert first.table["split"].tolist() == again.table["split"].tolist()
    assert (first.table.groupby("product_id")["split"].nunique() == 1).all()
    shares = first.table.groupby("label")["split"].value_counts(normalize=True)
    for label in ("a", "b"):
        assert shares[label]["train"] == pytest.approx(0.8, abs=0.02)
        assert shares[label]["val"] == pytest.approx(0.1, abs=0.02)
        assert shares[label]["test"] == pytest.approx(0.1, abs=0.02)


def test_tiny_classes_do_not_crash_and_are_explained():
    catalog = catalog_of(["big"] * 50 + ["one"] + ["two"] * 2)
    result, notes = assign_splits(catalog, seed=0)
    splits = result.table.groupby("label")["split"].apply(sorted).to_dict()
    assert splits["one"] == ["train"]
    assert splits["two"] == ["train", "val"]
    assert any("'one' has only 1" in note for note in notes)


def test_val_carved_from_train_when_missing():
    catalog = catalog_of(["a"] * 50 + ["b"] * 50)
    catalog.table["split"] = ["train"] * 80 + ["test"] * 20
    result = ensure_splits(catalog, val_fraction=0.25)
    counts = result.table["split"].value_counts().to_dict()
    assert counts["test"] == 20 and counts["train"] + counts["val"] == 80 and 19 <= counts["val"] <= 21
    assert ensure_splits(catalog, val_fraction=0).table["split"].value_counts().to_dict() == {"train": 80, "test": 20}


def test_stratified_limit_keeps_every_class():
    catalog = catalog_of(["a"] * 90 + ["b"] * 9 + ["c"])
    sample = stratified_sample(catalog, 20)
    assert len(sample) == 20
    counts = sample.class_counts()
    assert counts["c"] == 1 and counts["a"] > counts["b"] >= 1
    assert isinstance(sample.table, pd.DataFrame)
