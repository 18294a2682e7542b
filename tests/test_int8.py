"""int8 inference (issue 26): `catalens export RUN --int8` quantizes the network, checks it on the run's
validation photos, records the check in the card, and predict, sort and serve then use it."""

import csv
import io
import json

import numpy as np
import pytest
import torch
from conftest import run_cli, shared
from fastapi.testclient import TestClient
from test_transfer import lite0_weights

from catalens.apps.serve import ServeOptions, create_app
from catalens.apps.sort import sort_folder
from catalens.data import DataOptions, load_catalog
from catalens.errors import CatalensError
from catalens.models.quantize import quantize_int8
from catalens.rundir.layout import INT8_FILE
from catalens.rundir.run import Model

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def lite0_run(tmp_path_factory):
    lite0_weights()
    run = tmp_path_factory.mktemp("int8") / "run"
    result = run_cli("train", "--data", str(shared("clothing-small")), "--model", "tf_efficientnet_lite0",
                     "--pretrained", "--freeze", "backbone", "--limit", "400", "--out", str(run))
    assert result.returncode == 0, result.stderr
    return run


def test_int8_export_agrees_with_float_and_is_used_by_predict_sort_and_serve(lite0_run, tmp_path):
    # one check (about 40 s on 2 cores) for both outputs: the run's int8 network and, with --out, a standalone copy
    result = run_cli("export", str(lite0_run), "--int8", "--out", str(tmp_path / "lite0-int8.onnx"))
    assert result.returncode == 0, result.stderr
    record = json.loads((lite0_run / "model_card.json").read_text())["int8"]
    assert record["tolerance"] == 0.005 and record["calibration_photos"] == 200
    assert record["validation_photos"] == 341  # clothing-small's validation/ folder, every photo
    assert record["status"] == "used", record
    assert record["int8_accuracy"] >= record["float32_accuracy"] - 0.005
    assert (lite0_run / INT8_FILE).is_file()

    # agreement measured here, independently of the card, on the real validation photos
    catalog = load_catalog(str(shared("clothing-small")), DataOptions()).split("val")
    quantized, float32 = Model.load(lite0_run), Model.load(lite0_run, int8=False)
    assert (quantized.backend, float32.backend) == ("onnx-int8", "onnx")
    images = torch.stack([quantized.preprocessing.prepare(catalog.reader.read(ref)) for ref in catalog.table["ref"]])
    agree = (quantized.probabilities(images).argmax(1) == float32.probabilities(images).argmax(1)).mean()
    # 0.96: the head chosen by out-of-fold log-loss (issue 30) has smaller margins than the earlier C rule's;
    # 330 of 341 (0.968) agreed in the run of 2026-12-04 (0.971 before it); the decision is the accuracy check
    assert agree >= 0.96, agree
    assert record["agreement"] == pytest.approx(agree, abs=0.02)

    photos = tmp_path / "photos"
    photos.mkdir()
    files = sorted((shared("clothing-small") / "validation").rglob("*.jpg"))[::17][:20]
    for n, path in enumerate(files):
        (photos / f"{n}.jpg").write_bytes(path.read_bytes())
    summary = sort_folder(quantized, photos, tmp_path / "sorted", show_progress=False)
    assert summary.predicted == 20 and sum(summary.placed.values()) == 20
    with open(tmp_path / "sorted" / "manifest.csv") as handle:
        assert len(list(csv.DictReader(handle))) == 20

    with TestClient(create_app(lite0_run, ServeOptions(db=f"sqlite:///{tmp_path / 'h.db'}"))) as client:
        assert client.get("/v1/model").json()["backend"] == "onnx-int8"
        photo = files[0].read_bytes()
        answer = client.post("/v1/predict", files={"file": ("a.jpg", photo, "image/jpeg")}).json()
        from PIL import Image

        expected = quantized.predict([Image.open(io.BytesIO(photo))], k=1)[0][0][0]
        assert answer["predictions"][0]["label"] == expected

    standalone = Model.load(tmp_path / "lite0-int8.onnx")
    assert standalone.backend == "onnx-int8"
    np.testing.assert_allclose(standalone.probabilities(images[:8]), quantized.probabilities(images[:8]), atol=1e-5)


def test_int8_bad_input(lite0_run, tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx graph")
    with pytest.raises(CatalensError, match="could not quantize"):
        quantize_int8(broken, tmp_path / "out.onnx", np.zeros((2, 3, 224, 224), np.float32))
    assert not (tmp_path / "out.onnx").exists()
    result = run_cli("export", str(lite0_run), "--int8", "--tolerance", "-1")
    assert result.returncode != 0 and "--tolerance" in result.stderr and "Traceback" not in result.stderr
    result = run_cli("export", str(lite0_run))
    assert result.returncode != 0 and "--out" in result.stderr and "Traceback" not in result.stderr
