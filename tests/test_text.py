"""Text as an input (issue 19): `train --text title` fits image-only, text-only and fused heads on real catalog
photos (shared fashion-products) with titles; the fused head learns from the text when the images say nothing, and
from the images when the titles say nothing. Predict, evaluate and serve read the titles; a photo that cannot be
read is predicted from its title; `/v1/match` answers with the nearest products of a photo and/or a title."""

import json

import numpy as np
import pandas as pd
import pytest
from conftest import jpeg_bytes, run_cli, shared
from fastapi.testclient import TestClient

from catalens.engine.train import train
from catalens.errors import CatalensError

KINDS = {"Watches": "analog dial wrist watch", "Casual Shoes": "canvas lace-up sneakers",
         "Tshirts": "cotton round neck tee"}
BRANDS = ["Puma", "Nike", "Titan", "Fastrack", "Roadster", "Levis", "Adidas", "Casio"]
COLOURS = ["black", "white", "blue", "red", "grey", "green"]
PER_CLASS = 60


def styles():
    table = pd.read_csv(shared("fashion-products/styles.csv"), dtype=str, keep_default_na=False)
    return pd.concat([table[table["articleType"] == kind].head(PER_CLASS) for kind in KINDS], ignore_index=True)


def write_csv(folder, rows: pd.DataFrame, titles: list[str], images: list[str]):
    path = folder / "catalog.csv"
    pd.DataFrame({"posting_id": rows["id"], "image": images, "title": titles,
                  "label_group": rows["articleType"]}).to_csv(path, index=False)
    return path


def informative_titles(rows: pd.DataFrame, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [f"{rng.choice(BRANDS)} {rng.choice(COLOURS)} {KINDS[kind]} {rng.integers(100, 999)}"
            for kind in rows["articleType"]]


def noise_titles(rows: pd.DataFrame, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [f"{rng.choice(BRANDS)} {rng.choice(COLOURS)} item {rng.integers(100, 999)}" for _ in range(len(rows))]


def fit(data: str, images: str, out, **extra) -> dict:
    train(data=data, images=images, text="title", model="tf_efficientnet_lite0", pretrained=True,
          freeze="backbone", out=str(out), split_ratios=(0.6, 0.4, 0.0), **extra)
    return json.loads((out / "model_card.json").read_text())


@pytest.fixture(scope="module")
def photos_with_titles(tmp_path_factory):
    """Real photos (informative) with informative titles: the run the other tests use."""
    folder = tmp_path_factory.mktemp("text-catalog")
    rows = styles()
    path = write_csv(folder, rows, informative_titles(rows, 0), [f"{i}.jpg" for i in rows["id"]])
    run = folder / "run"
    card = fit(f"csv:{path}", str(shared("fashion-products/images")), run)
    return path, run, card


def test_text_alone_carries_it_when_the_images_are_uninformative(tmp_path):
    rows = styles()
    blank = tmp_path / "images"
    blank.mkdir()
    noise = np.random.default_rng(0).integers(0, 255, (96, 96, 3), dtype=np.uint8)
    (blank / "same.jpg").write_bytes(jpeg_bytes(noise))  # one photo for every product: it tells nothing
    path = write_csv(tmp_path, rows, informative_titles(rows, 1), ["same.jpg"] * len(rows))
    validation = fit(f"csv:{path}", str(blank), tmp_path / "run")["text"]["validation"]
    assert validation["image"]["accuracy"] < 0.5
    assert validation["text"]["accuracy"] > 0.95 and validation["fused"]["accuracy"] > 0.95


def test_images_carry_it_when_the_titles_are_uninformative(tmp_path):
    rows = styles()
    path = write_csv(tmp_path, rows, noise_titles(rows, 2), [f"{i}.jpg" for i in rows["id"]])
    validation = fit(f"csv:{path}", str(shared("fashion-products/images")), tmp_path / "run")["text"]["validation"]
    assert validation["text"]["accuracy"] < 0.6
    assert validation["image"]["accuracy"] > 0.9 and validation["fused"]["accuracy"] > 0.9


def test_evaluate_reports_each_input_and_predict_falls_back_to_the_title(photos_with_titles, tmp_path):
    path, run, card = photos_with_titles
    assert card["text"]["columns"] == ["title"] and (run / "text_model.safetensors").is_file()
    result = run_cli("evaluate", str(run), "--data", f"csv:{path}", "--split", "val", "--out", str(tmp_path / "e"))
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert set(metrics["by_input"]) == {"image", "text", "fused"}
    assert metrics["by_input"]["fused"]["accuracy"] > 0.9
    assert "Image, text (title) and fused" in (tmp_path / "e" / "report.md").read_text()

    # one photo broken: predicted from its title alone, said so; the others from photo + title
    table = pd.read_csv(path, dtype=str)
    images = tmp_path / "images"
    images.mkdir()
    for name in table["image"][:6]:
        (images / name).write_bytes((shared("fashion-products/images") / name).read_bytes())
    (images / table["image"][0]).write_bytes(b"not a jpeg")
    small = tmp_path / "small.csv"
    table.head(6).to_csv(small, index=False)
    result = run_cli("predict", str(run), f"csv:{small}", "--images", str(images), "--out", str(tmp_path / "p.csv"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "predicted from their text alone" in result.stderr
    predictions = pd.read_csv(tmp_path / "p.csv", dtype=str)
    truth = dict(zip(table["posting_id"][:6], table["label_group"][:6]))
    assert len(predictions) == 6 and all(truth[i] == label for i, label in zip(predictions["id"], predictions["label"]))


def test_text_on_a_source_without_text_is_one_line(image_folder, tmp_path):
    with pytest.raises(CatalensError, match=r"--text title: .* has no text in title \(columns with text: none\)"):
        train(data=str(image_folder), text="title", model="tf_efficientnet_lite0", pretrained=True,
              freeze="backbone", out=str(tmp_path / "run"))
    result = run_cli("train", "--data", str(image_folder), "--text", "colour", "--out", str(tmp_path / "r2"))
    assert result.returncode != 0 and "--text takes title or description" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_reads_the_title_and_match_finds_the_product(photos_with_titles, tmp_path):
    from catalens.apps.serve import ServeOptions, create_app

    path, run, _ = photos_with_titles
    table = pd.read_csv(path, dtype=str)
    first, more = tmp_path / "first.csv", tmp_path / "more.csv"
    table.iloc[::2].to_csv(first, index=False)
    table.iloc[1::2].to_csv(more, index=False)
    images = str(shared("fashion-products/images"))
    index = tmp_path / "index"
    for csv_path, extra in ((first, []), (more, ["--add"]), (more, ["--add"])):
        result = run_cli("match", "index", f"csv:{csv_path}", "--images", images, "--run", str(run),
                         "--out", str(index), *extra)
        assert result.returncode == 0, result.stderr[-2000:]
    assert "0 item(s) indexed" in result.stderr  # the second add found nothing new
    assert len(pd.read_csv(index / "items.csv")) == len(table)

    photo_id, title = table["image"][3], table["title"][3]
    photo = (shared("fashion-products/images") / photo_id).read_bytes()
    options = ServeOptions(db=f"sqlite:///{tmp_path / 'h.db'}", match_index=str(index))
    with TestClient(create_app(run, options)) as client:
        answer = client.post("/v1/predict", files={"file": ("p.jpg", photo, "image/jpeg")}, data={"title": title})
        assert answer.status_code == 200, answer.text
        assert answer.json()["predictions"][0]["label"] == table["label_group"][3]
        for data, files in (({}, {"file": ("p.jpg", photo, "image/jpeg")}), ({"title": title}, None),
                            ({"title": title}, {"file": ("p.jpg", photo, "image/jpeg")})):
            found = client.post("/v1/match?k=3", data=data, files=files)
            assert found.status_code == 200, found.text
            best = found.json()["matches"][0]
            assert best["item_id"] == table["posting_id"][3] and best["score"] > 0.9
        assert client.post("/v1/match", json={"title": ""}).status_code == 422
        assert client.post("/v1/match", json={"title": "x" * 5000}).status_code == 422
