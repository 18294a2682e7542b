"""Validation that bursts of near-identical shots cannot fool (issue 25): splits carved from data without product
ids keep byte-identical and near-identical photos (perceptual hash within 6 bits) on one side."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import shared
from marketplace_data import make_shopee
from PIL import Image

from catalens import CatalensError
from catalens.data import DataOptions, load_catalog
from catalens.data import splits as splitting
from catalens.data.catalog import ArrayReader, Catalog
from catalens.data.leakage import training_overlap


def test_no_near_identical_real_photo_crosses_train_and_validation(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train").symlink_to(shared("clothing-small/train"))
    catalog = load_catalog(str(tmp_path / "data"), DataOptions())
    notes = " ".join(catalog.notes)
    assert "61 of 3,068 photos in 23 groups of 2 or more" in notes
    assert "photo by photo, 5 of 340 held-out photos would have had one in train" in notes
    overlap = training_overlap(catalog.split("val"), catalog.split("train"), max_distance=splitting.GROUP_DISTANCE)
    assert (overlap.exact, overlap.near) == (0, 0)
    # photo by photo, the same seed lets 5 validation photos keep a near-identical twin in train
    ungrouped = load_catalog(str(tmp_path / "data"), DataOptions(group_by="photo"))
    assert "photo by photo (--group-by photo)" in " ".join(ungrouped.notes)
    overlap = training_overlap(ungrouped.split("val"), ungrouped.split("train"),
                               max_distance=splitting.GROUP_DISTANCE)
    assert (overlap.exact, overlap.near) == (0, 5)


def test_bursts_of_shots_stay_together(tmp_path):
    rng = np.random.default_rng(0)
    for kind in ("warm", "cold"):
        for item in range(12):  # 12 items per class, 4 shots of each: one smooth scene with a little sensor noise
            scene = rng.integers(0, 255, (6, 6, 3), dtype=np.uint8)
            scene[..., 0 if kind == "warm" else 2] = 255
            base = np.asarray(Image.fromarray(scene).resize((96, 96), Image.BICUBIC), np.int16)
            for shot in range(4):
                noisy = (base + rng.normal(0, 2, base.shape)).clip(0, 255).astype(np.uint8)
                folder = tmp_path / "data" / kind
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(noisy).save(folder / f"item{item:02d}_shot{shot}.png")
    catalog = load_catalog(str(tmp_path / "data"), DataOptions())
    table = catalog.table
    items = table["ref"].astype(str).str.extract(r"(\w+)/item(\d+)_")[[0, 1]].agg("-".join, axis=1)
    assert (table.groupby(items)["split"].nunique() == 1).all()  # every item's 4 shots in one split
    assert set(table["split"]) == {"train", "val", "test"}
    assert "96 of 96 photos in 24 groups" in " ".join(catalog.notes)


def test_pixel_identical_arrays_share_a_split():
    arrays = np.random.default_rng(1).integers(0, 255, (200, 28, 28), dtype=np.uint8)
    arrays[100:150] = arrays[:50]  # 50 exact copies
    catalog = Catalog.from_records({"item_id": [str(i) for i in range(200)], "ref": np.arange(200),
                                    "label": ["a", "b"] * 100, "split": ["train"] * 200},
                                   classes=["a", "b"], arrays=arrays, reader=ArrayReader(arrays), source="arrays",
                                   channels=1)
    carved = splitting.ensure_splits(catalog, val_fraction=0.2)
    split = carved.table["split"].to_numpy()
    assert (split[:50] == split[100:150]).all()
    assert 30 <= (split == "val").sum() <= 50


def test_cross_validation_folds_keep_groups():
    from catalens.models.linear_head import folds_of

    labels, groups = np.repeat([0, 1], 60), np.arange(120) // 4  # 30 groups of 4 near-identical photos
    parts = folds_of(labels, 5, 0, groups)
    assert len(parts) == 5 and all(not set(groups[fit]) & set(groups[held]) for fit, held in parts)
    assert sorted(np.concatenate([held for _, held in parts])) == list(range(120))
    ungrouped = folds_of(labels, 5, 0)  # photo by photo: shots of one item on both sides
    assert any(set(groups[fit]) & set(groups[held]) for fit, held in ungrouped)


def test_training_cross_validates_by_group(tmp_path):
    from catalens.data.splits import cv_groups

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train").symlink_to(shared("clothing-small/train"))
    catalog = load_catalog(str(tmp_path / "data"), DataOptions())
    train = catalog.split("train")
    groups = cv_groups(train)
    sizes = np.bincount(groups)
    assert len(groups) == len(train) and sizes.max() > 1 and (sizes > 1).sum() <= 23


def test_csv_groups_by_a_column_or_by_near_identical_photos(tmp_path):
    planted = make_shopee(tmp_path / "shop", shared("clothing-small/train"), classes=4, per_class=12)
    spec = f"csv:{tmp_path / 'shop' / 'train.csv'}"
    catalog = load_catalog(spec, DataOptions())
    split = dict(zip(catalog.table["item_id"], catalog.table["split"]))
    for first, second in planted["exact"] + planted["near"]:  # copies stay with their originals
        assert split[first] == split[second]
    by_hash = load_catalog(spec, DataOptions(group_by="image_phash"))
    import pandas as pd

    hashes = pd.read_csv(tmp_path / "shop" / "train.csv", dtype=str).set_index("posting_id")["image_phash"]
    table = by_hash.table.assign(phash=by_hash.table["item_id"].map(hashes))
    assert (table.groupby("phash")["split"].nunique() == 1).all()
    assert "grouped by the image_phash column" in " ".join(by_hash.notes)
    assert by_hash.table["product_id"].equals(by_hash.table["item_id"])  # a group is not a product
    # a column that groups different photos (one item shot three ways): only the column can keep them together
    frame = pd.read_csv(tmp_path / "shop" / "train.csv", dtype=str)
    frame["item"] = [f"item{i // 3}" for i in range(len(frame))]
    frame.to_csv(tmp_path / "shop" / "train.csv", index=False)
    by_item = load_catalog(spec, DataOptions(group_by="item"))
    table = by_item.table.assign(item=by_item.table["item_id"].map(frame.set_index("posting_id")["item"]))
    assert (table.groupby("item")["split"].nunique() == 1).all() and (table["split"] == "val").any()
    with pytest.raises(CatalensError, match="is the label column"):
        load_catalog(spec, DataOptions(group_by="label_group"))
    with pytest.raises(CatalensError, match="--group-by shop_id: train.csv has no such column"):
        load_catalog(spec, DataOptions(group_by="shop_id"))
    with pytest.raises(CatalensError, match="a column name works for csv: sources only"):
        load_catalog(str(shared("clothing-small/train")), DataOptions(group_by="shop_id"))


def test_look_alikes_do_not_chain_into_a_giant_group():
    from catalens.data.identity import capped_clusters, clusters_of

    chain = np.array([(i, i + 1) for i in range(59)])  # 60 photos, each 6 bits from the next
    distances = np.full(59, 6)
    distances[[10, 30]] = 1  # two close pairs: joined first
    assert np.bincount(clusters_of(chain, 60)).max() == 60
    groups = capped_clusters(chain, distances, 60, cap=20)
    sizes = np.bincount(groups)
    assert sizes.max() <= 20 and sizes.sum() == 60 and len(sizes) == 3
    assert groups[10] == groups[11] and groups[30] == groups[31]
