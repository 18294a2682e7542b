"""The auto recipe's ladder on this machine's measured speed and budget (`alone`: no other test runs meanwhile). A
file of its own, run at the end by conftest.py, where its `alone` tests hold the other worker back the least.
test_heads_and_recipes.py checks the mirror ensemble it trains as a teacher, and leaves its features graph in the
user cache."""

from __future__ import annotations

import json

import pytest
from conftest import packaged, run_cli, shared
from PIL import Image


@pytest.mark.integration
@pytest.mark.alone  # the ladder stops where the budget ends, by this machine's measured speed
def test_auto_recipe_picks_fastcnn_for_fashion_mnist_and_pretrained_features_for_photos(tmp_path):
    fashion = f"fashion-mnist:{shared('fashion-mnist')}"
    result = run_cli("train", "--data", fashion, "--limit", "600", "--time-budget", "2", "--out",
                     str(tmp_path / "fm"))
    assert result.returncode == 0, result.stderr
    assert "auto recipe" in result.stderr and "fastcnn" in result.stderr
    card = json.loads((tmp_path / "fm" / "model_card.json").read_text())
    assert card["architecture"] == "fastcnn"

    packaged("tf_efficientnet_lite0")
    photos = shared("clothing-small")
    # the budget holds Lite0 only: the ladder stops there and says why
    result = run_cli("train", "--data", str(photos), "--limit", "120", "--time-budget", "1.0", "--out",
                     str(tmp_path / "photos"))
    assert result.returncode == 0, result.stderr
    card = json.loads((tmp_path / "photos" / "model_card.json").read_text())
    assert card["architecture"] == "timm:tf_efficientnet_lite0" and card["recipe"]["chosen"] == "tf_efficientnet_lite0"
    assert "not trying" in result.stderr and not (tmp_path / "photos" / ".auto").exists()
    assert Image.open(tmp_path / "photos" / "training_curves.png").size[0] > 0

    result = run_cli("train", "--data", str(photos), "--time-budget", "0.1", "--out", str(tmp_path / "tiny"))
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: --time-budget 0.1 min is too small") and \
        "give at least --time-budget" in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.integration
@pytest.mark.alone  # candidates are timed on this machine against --min-speed
def test_auto_recipe_weighs_speed_and_distils_the_ensemble(tmp_path):
    """Real photos, small sample: the ensemble is trained (it is the teacher) but slower than the default
    --min-speed, so a single-pass model is chosen; every candidate is listed with its measured speed."""
    for name in ("tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2"):
        packaged(name)
    run = tmp_path / "auto"
    result = run_cli("train", "--data", str(shared("clothing-small")), "--limit", "150", "--out", str(run))
    assert result.returncode == 0, result.stderr
    card = json.loads((run / "model_card.json").read_text())
    recipe = card["recipe"]
    tried = {row["model"]: row for row in recipe["tried"]}
    ensemble = "ensemble:tf_efficientnet_lite0+tf_efficientnet_lite1+tf_efficientnet_lite2/mirror"
    assert recipe["min_speed"] == 56.0
    assert "under --min-speed 56" in tried[ensemble]["note"] and tried[ensemble]["sort_photos_per_s"] < 56
    assert "ensemble:tf_efficientnet_lite1/mirror" not in tried  # estimated under --min-speed: not trained
    assert "not trying ensemble:tf_efficientnet_lite1/mirror" in result.stderr
    distilled = [name for name in tried if "distilled from" in name]
    students = [name for name in ("tf_efficientnet_lite0", "tf_efficientnet_lite1")
                if tried[name]["cv_accuracy"] < tried[ensemble]["cv_accuracy"]]  # a head the teacher beats
    assert students and distilled == [f"{name} distilled from {ensemble}" for name in students]
    assert all(tried[name]["sort_photos_per_s"] == tried[name.split(" ")[0]]["sort_photos_per_s"] for name in distilled)
    fast = [row for row in recipe["tried"] if row["sort_photos_per_s"] >= 56]
    assert recipe["chosen"] in {row["model"] for row in fast}
    assert tried[recipe["chosen"]]["cv_accuracy"] == max(row["cv_accuracy"] for row in fast)
    assert tried[recipe["chosen"]]["note"].endswith("chosen")
    assert card["architecture"].startswith("timm:tf_efficientnet_lite")  # one pass per photo
    assert not (run / ".auto").exists() and f"out: {run}" in (run / "config.yaml").read_text()
