"""Integration on the real Fashion-MNIST files: a short schedule must reach a real accuracy floor."""

import json

import pytest
from conftest import run_cli, shared

import catalens

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def fashion(tmp_path_factory):
    return f"fashion-mnist:{shared('fashion-mnist')}"


def test_groups_mapping_trains_five_classes(fashion, tmp_path):
    result = catalens.train(data=fashion, model="cnn3", labels="fashion-mnist-groups", epochs=2, limit=6000,
                            optimizer="adamw", out=str(tmp_path / "groups"))
    assert result.metrics["accuracy"] >= 0.85
    # evaluate reuses the mapping recorded in the model card
    metrics = catalens.evaluate(result.run_dir, data=fashion, out=tmp_path / "eval")
    assert metrics["classes"] == ["upper part", "bottom part", "one piece", "footwear", "bags"]
    assert metrics["per_class"]["upper part"]["support"] == 4000
    assert metrics["accuracy"] >= 0.85


def test_predict_on_a_data_spec(fashion, tmp_path):
    run = tmp_path / "run"
    catalens.train(data=fashion, model="cnn3", epochs=1, limit=3000, optimizer="adamw", out=str(run))
    out = tmp_path / "test.csv"
    summary = catalens.predict(run, [fashion], k=3, out=out, split="test")
    assert summary["predicted"] == 10_000
    assert len(out.read_text().splitlines()) == 10_001


@pytest.fixture(scope="module")
def demo(fashion, tmp_path_factory):
    """`catalens demo` for one epoch: the default model on all of Fashion-MNIST's training images."""
    where = tmp_path_factory.mktemp("demo")
    result = run_cli("demo", "--epochs", "1", "--data", fashion, "--out", str(where / "demo"), cwd=where)
    assert result.returncode == 0, result.stderr
    return where / "demo", result


def test_demo_command(demo):
    run, result = demo
    assert (run / "eval" / "report.md").is_file()
    assert "report.md" in result.stderr


def test_short_schedule_reaches_accuracy_floor(demo, fashion, tmp_path):
    run, _ = demo
    card = json.loads((run / "model_card.json").read_text())
    assert card["data"]["train_items"] == 53_330 and card["training"]["epochs"] == 1
    assert card["preprocessing"]["channels"] == 1 and card["preprocessing"]["input_size"] == [28, 28]
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["items"] == 10_000
    assert metrics["accuracy"] >= 0.80, metrics["accuracy"]  # one seeded epoch of the default model; chance 0.10
    assert metrics["top_k_accuracy"]["5"] >= 0.99
    assert metrics["backend"] == "onnx"
    # the onnxruntime and PyTorch backends give the same predictions
    torch_metrics = catalens.evaluate(run, data=fashion, out=tmp_path / "eval-torch", backend="torch")
    assert torch_metrics["accuracy"] == pytest.approx(metrics["accuracy"], abs=2e-4)
