"""The four training modes (engine/modes.py): each is chosen from the config, trains through the one Trainer,
writes the run directory and reloads to predict."""

import json

import numpy as np
import pytest
from conftest import make_folder

import catalens
from catalens.engine.config import make_config
from catalens.engine.modes import CachedHead, CachedPrefix, FineTune, LinearHead, choose_mode
from catalens.models import create_model
from catalens.models.finetune import FreezePlan

LITE0 = "timm:tf_efficientnet_lite0"
MODES = [  # (mode, train options, what the model card says)
    (FineTune, {"model": "cnn3", "epochs": 2}, {"cached_features": False, "head": "sgd"}),
    (CachedHead, {"model": LITE0, "pretrained": True, "freeze": "backbone", "head": "sgd", "epochs": 2},
     {"cached_features": True, "head": "sgd"}),
    (LinearHead, {"model": LITE0, "pretrained": True, "freeze": "backbone"}, {"cached_features": True}),
    (CachedPrefix, {"model": LITE0, "pretrained": True, "freeze": "1", "head": "sgd", "epochs": 1},
     {"cached_features": False, "head": "sgd"}),
]


@pytest.mark.parametrize("mode, options, card_says", MODES, ids=[mode.__name__ for mode, _, _ in MODES])
def test_each_mode_is_chosen_trains_and_reloads(mode, options, card_says, tmp_path):
    config = make_config(data="x", out="x", **options)
    module = create_model(config.model, 3, 3, (64, 64))
    assert type(choose_mode(config, FreezePlan(module, config.model, config.freeze, None), module)) is mode
    data = make_folder(tmp_path / "shop", per_class=10, size=64)
    result = catalens.train(data=str(data), out=str(tmp_path / "run"), input_size=64, batch_size=8, workers=0,
                            seed=0, **options)
    card = json.loads((result.run_dir / "model_card.json").read_text())
    assert {key: card["training"][key] for key in card_says} == card_says
    assert (card["training"]["cached_prefix_blocks"] is not None) == (mode is CachedPrefix)
    if mode is LinearHead:
        assert card["training"]["head"]["method"].startswith("multinomial logistic regression")
        assert result.best_epoch == 1
    predictions = catalens.Model.load(result.run_dir, backend="torch").predict([next(data.rglob("*.jpg"))], k=2)
    assert len(predictions[0]) == 2


def test_a_frozen_extractor_is_exported_once_per_what_it_computes(tmp_path, monkeypatch):
    """Cached-feature training exports the frozen extractor to onnxruntime once into $CATALENS_CACHE: another run
    on the same backbone with other classes reuses the graph (same features); other weights or another Prefix
    split export their own."""
    from types import SimpleNamespace

    import torch

    from catalens.models.features import PreLogits, cached_graph, pre_logits
    from catalens.models.onnx_backend import onnx_available
    from catalens.models.prefix_cache import Prefix

    if not onnx_available():
        pytest.skip("onnxruntime is not installed")
    monkeypatch.setenv("CATALENS_CACHE", str(tmp_path / "cache"))
    preprocessing = SimpleNamespace(input_size=(32, 32), channels=3)
    torch.manual_seed(0)
    three = create_model("mobilenetv2_100", 3, input_size=(32, 32)).eval()
    five = create_model("mobilenetv2_100", 5, input_size=(32, 32)).eval()
    five.load_state_dict({key: value for key, value in three.state_dict().items() if "classifier" not in key},
                         strict=False)  # the same backbone, another classifier
    images = torch.randn(4, 3, 32, 32)
    first = cached_graph(PreLogits(three), preprocessing)
    graphs = lambda: sorted((tmp_path / "cache" / "onnx").glob("features-*.onnx"))  # noqa: E731
    assert len(graphs()) == 1
    stamp = graphs()[0].stat().st_mtime_ns
    again = cached_graph(PreLogits(five), preprocessing)
    assert len(graphs()) == 1 and graphs()[0].stat().st_mtime_ns == stamp
    with torch.no_grad():
        expected = pre_logits(five, images).numpy()
    np.testing.assert_allclose(again.run(images.numpy()), expected, atol=1e-4)
    np.testing.assert_allclose(first.run(images.numpy()), expected, atol=1e-4)
    with torch.no_grad():
        three.conv_stem.weight.add_(0.1)  # other weights: another graph
    cached_graph(PreLogits(three), preprocessing)
    cached_graph(Prefix(five, 3), preprocessing)
    cached_graph(Prefix(five, 4), preprocessing)  # the split is an attribute, not a weight
    assert len(graphs()) == 4
