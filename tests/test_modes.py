"""The four training modes (engine/modes.py): each is chosen from the config, trains through the one Trainer,
writes the run directory and reloads to predict."""

import json

import numpy as np
import pytest
from conftest import make_folder, missing

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


def test_two_processes_that_need_one_features_graph_export_it_once(tmp_path, monkeypatch):
    """Two trainings (two pytest workers, two catalens jobs) that need the same frozen extractor's graph at the
    same moment: the second waits on the lock file for the first's export and reads it. Threads here: each takes
    the lock through its own file handle, as a process does."""
    import threading

    import torch

    from catalens.loading.preprocess import Preprocessing
    from catalens.models import features
    from catalens.models.onnx_backend import export_onnx, onnx_available

    if not onnx_available():
        missing("onnxruntime is not installed (a dependency of catalens: pip install -e '.[test,lite]')")
    monkeypatch.setenv("CATALENS_CACHE", str(tmp_path / "cache"))
    exports = []
    monkeypatch.setattr(features, "export_onnx", lambda *args: exports.append(args) or export_onnx(*args))
    torch.manual_seed(0)
    model = create_model("mobilenetv2_100", 3, input_size=(32, 32)).eval()
    preprocessing = Preprocessing(input_size=(32, 32), channels=3, mean=(0.5,) * 3, std=(0.5,) * 3)
    runners = []
    threads = [threading.Thread(target=lambda: runners.append(features.cached_graph(features.PreLogits(model),
                                                                                    preprocessing)))
               for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(exports) == 1 and len(runners) == 2
    images = torch.randn(3, 3, 32, 32).numpy()
    np.testing.assert_array_equal(runners[0].run(images), runners[1].run(images))


def test_a_frozen_models_graph_is_its_cached_features_graph_and_one_gemm(tmp_path, monkeypatch):
    """A frozen run's training exported its backbone's features graph into the cache; evaluate, predict and
    export then add the run's linear classifier to that graph (one Gemm) instead of exporting the whole network
    again (10-47 s on 2 cores), with PyTorch's logits and the run's card. Nothing cached: None (export whole)."""
    import onnx
    import torch

    from catalens.loading.preprocess import Preprocessing
    from catalens.models.features import PreLogits, cached_graph, with_cached_features
    from catalens.models.onnx_backend import OnnxRunner, onnx_available

    if not onnx_available():
        missing("onnxruntime is not installed (a dependency of catalens: pip install -e '.[test,lite]')")
    monkeypatch.setenv("CATALENS_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    model = create_model("mobilenetv2_100", 3, input_size=(32, 32)).eval()
    with torch.no_grad():
        model.get_classifier().bias.copy_(torch.tensor([0.5, -1.0, 2.0]))
    preprocessing = Preprocessing(input_size=(32, 32), channels=3, mean=(0.5,) * 3, std=(0.5,) * 3)
    card = {"classes": ["a", "b", "c"], "preprocessing": preprocessing.to_dict()}
    path = tmp_path / "model.onnx"
    assert with_cached_features(model, card, path) is None and not path.exists()
    cached_graph(PreLogits(model), preprocessing)  # what a frozen run's feature extraction does
    _, difference = with_cached_features(model, card, path)
    graph = onnx.load(str(path)).graph
    assert graph.node[-1].op_type == "Gemm" and graph.node[-1].input[0] == "pre_logits"
    assert [output.name for output in graph.output] == ["logits"] and difference < 1e-4
    runner = OnnxRunner(path)
    assert runner.card == card
    images = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        expected = model(images).numpy()
    np.testing.assert_allclose(runner.run(images.numpy()), expected, atol=1e-4)


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
        missing("onnxruntime is not installed (a dependency of catalens: pip install -e '.[test,lite]')")
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
