"""The real product photos in ../shared/data/clothing-small: a pre-split folder of RGB JPEGs."""

import json

import pytest
from conftest import run_cli, shared

from catalens.data.sources import open_source

pytestmark = pytest.mark.integration


def test_stats_on_real_photos():
    folder = shared("clothing-small")
    result = run_cli("catalog", "stats", str(folder), "--json")
    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout)
    assert stats["items"] == 3409 and stats["classes"] == 10 and stats["problems"] == []
    assert stats["per_split"] == {"train": 3068, "val": 341}
    assert stats["per_class"]["t-shirt"] == 795 + 81
    assert stats["imbalance_ratio"] == pytest.approx(876 / 124, abs=1e-3)  # t-shirt / skirt


def test_photos_decode_to_rgb_at_model_size():
    catalog = open_source(str(shared("clothing-small")))
    from catalens.loading.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocessing

    prep = Preprocessing(input_size=(224, 224), channels=3, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    tensor = prep.prepare(catalog.read(0))
    assert tuple(tensor.shape) == (3, 224, 224)
    gray = Preprocessing(input_size=(28, 28), channels=1, mean=(0.5,), std=(0.5,)).prepare(catalog.read(0))
    assert tuple(gray.shape) == (1, 28, 28)
