"""Several targets from one photo and category trees (issue 30): a 4-target run with tags on real fashion-products
photos (Fashion Product's own styles.csv columns, mapped with --columns; trained by the auto recipe), its tree
(masterCategory > subCategory > articleType) found in the data, per-target output from predict (CSV, JSON Lines,
Parquet), evaluate, serve and sort, and --min-confidence answers up the tree; the tree arithmetic and the tag
metrics on hand-made examples."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import missing, run_cli, shared
from fastapi.testclient import TestClient

from catalens.data.targets import check_tree, detect_tree
from catalens.engine.train import train
from catalens.errors import CatalensError
from catalens.models.targets import Head, Targets

KINDS = ["Tshirts", "Shirts", "Jeans", "Trousers", "Casual Shoes", "Sports Shoes", "Watches", "Handbags"]
PER_KIND = 40
TARGETS = "articleType,subCategory,masterCategory,gender"
COLUMNS = "posting_id=id,image=id,title=productDisplayName"


def subset() -> pd.DataFrame:
    table = pd.read_csv(shared("fashion-products/styles.csv"), dtype=str, keep_default_na=False)
    rows = pd.concat([table[table["articleType"] == kind].head(PER_KIND) for kind in KINDS], ignore_index=True)
    rows.loc[rows.index % 10 == 1, "gender"] = ""  # missing values (32 in train, 32 in val): they train the
    rows.loc[rows.index % 10 == 4, "gender"] = ""  # other targets
    rows["style"] = rows["gender"] + "|" + rows["usage"] + "|" + rows["season"]  # tags, several per photo
    rows.loc[[0, 1, 2], "style"] += "|Rare"  # in 3 rows: dropped and listed
    rows["split"] = np.where(np.arange(len(rows)) % 5 < 3, "train", "val")  # a split column, used as given
    return rows


@pytest.fixture(scope="module")
def targets_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("targets")
    rows = subset()
    path = folder / "styles.csv"
    rows.to_csv(path, index=False)
    run = folder / "run"
    result = run_cli("train", "--data", f"csv:{path}", "--images", str(shared("fashion-products/images")),
                     "--columns", COLUMNS, "--targets", TARGETS, "--tags", "style", "--out", str(run))
    assert result.returncode == 0, result.stderr[-3000:]  # no model flags: the auto recipe, with --targets
    assert "auto recipe: chose" in result.stderr
    return path, run, rows


def test_a_target_run_fits_a_head_per_target_and_finds_the_tree(targets_run):
    _, run, rows = targets_run
    card = json.loads((run / "model_card.json").read_text())
    assert card["targets"]["names"] == TARGETS.split(",")
    assert card["targets"]["tree"] == ["masterCategory", "subCategory", "articleType"]
    assert card["classes"] == sorted(KINDS)  # the first target is the run's own label
    heads = card["targets"]["heads"]
    chance = {"articleType": 1 / 8, "subCategory": 1 / 5, "masterCategory": 1 / 2, "gender": 1 / 2}
    for name, head in heads.items():
        assert head["validation"]["accuracy"] > min(0.95, chance[name] + 0.3), (name, head)
    assert int((rows["gender"] == "").sum()) == 64
    assert heads["gender"]["missing"] == 32 and heads["articleType"]["missing"] == 0
    assert heads["gender"]["train_items"] + heads["gender"]["missing"] == heads["articleType"]["train_items"]
    tags = card["targets"]["tags"]
    assert "Rare" not in tags["names"] and tags["dropped"] == ["Boys", "Rare", "Smart Casual", "Spring", "Unisex"]
    assert {"Men", "Women", "Casual", "Summer"} <= set(tags["names"])
    assert tags["validation"]["micro_f1"] > 0.6
    cv = {float(c): score for c, score in tags["cv_micro_f1"].items()}  # the tags' C: cross-validated on train
    assert len(cv) == 6 and tags["C"] == min(c for c, score in cv.items() if score == max(cv.values()))
    chosen = card["targets"]["tree_thresholds"]  # the tree's --min-confidence for 98 % / 99 % right, on validation
    assert set(chosen) == {"0.98", "0.99"} and chosen["0.98"] is not None
    for wanted, entry in chosen.items():
        assert entry is None or (0.5 <= entry["threshold"] <= 0.995 and entry["accuracy"] >= float(wanted)), entry


def test_evaluate_reports_every_target_and_the_tree(targets_run, tmp_path):
    path, run, rows = targets_run
    result = run_cli("evaluate", str(run), "--data", f"csv:{path}", "--split", "all", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    targets = metrics["targets"]
    assert set(targets) == set(TARGETS.split(","))
    assert targets["gender"]["missing"] == 64 and targets["gender"]["items"] == len(rows) - 64
    assert targets["articleType"]["items"] == len(rows) and targets["articleType"]["missing"] == 0
    assert targets["masterCategory"]["accuracy"] > 0.9 and "own_head" in targets["masterCategory"]
    tree = metrics["tree"]
    assert tree["levels"] == ["masterCategory", "subCategory", "articleType"]
    coverage = [row["coverage"] for row in tree["thresholds"]]
    assert coverage == sorted(coverage, reverse=True) and coverage[0] > 0.9  # a higher bar answers fewer photos
    assert all(row["accuracy_answered"] > 0.9 for row in tree["thresholds"])
    assert (tmp_path / "tree_coverage.png").stat().st_size > 1000
    card = json.loads((run / "model_card.json").read_text())["targets"]["tree_thresholds"]
    assert {wanted: entry["validation"] for wanted, entry in tree["for_accuracy"].items()} == \
        {wanted: entry for wanted, entry in card.items() if entry}
    for entry in tree["for_accuracy"].values():  # scored here at the threshold chosen on validation
        at = entry["evaluated"]
        assert at["threshold"] == entry["validation"]["threshold"] and 0 < at["answered"] <= len(rows)
        assert f"`--min-confidence {at['threshold']:g}`" in (tmp_path / "report.md").read_text()
    assert metrics["tags"]["micro_f1"] > 0.6 and metrics["tags"]["per_tag"]["Men"]["support"] > 0
    assert "## Targets" in (tmp_path / "report.md").read_text()


def copy_photos(ids, folder: Path) -> Path:
    """These fashion-products photos, copied into a folder of their own (ID.jpg)."""
    folder.mkdir()
    for image_id in ids:
        (folder / f"{image_id}.jpg").write_bytes(shared(f"fashion-products/images/{image_id}.jpg").read_bytes())
    return folder


def test_the_features_graph_is_exported_once_into_the_user_cache(targets_run, tmp_path, monkeypatch):
    """A --targets run's heads read the pooled features: on CPU with onnxruntime their graph is exported once per
    weights into $CATALENS_CACHE (never into the run), and a second load reads it with the same probabilities."""
    from catalens.loading.batches import make_batches
    from catalens.models.onnx_backend import onnx_available
    from catalens.rundir.run import Model

    if not onnx_available():
        missing("onnxruntime is not installed (a dependency of catalens: pip install -e '.[test,lite]')")
    path, run, _ = targets_run
    monkeypatch.setenv("CATALENS_CACHE", str(tmp_path / "cache"))
    from catalens.data import DataOptions, load_catalog

    catalog = load_catalog(f"csv:{path}", DataOptions(images=str(shared("fashion-products/images")),
                                                      columns=COLUMNS, targets=TARGETS)).split("val")
    images = next(iter(make_batches(catalog, Model.load(run, backend="torch").preprocessing, 16))).images
    before = {item: item.stat().st_mtime_ns for item in run.rglob("*")}
    first = Model.load(run, device="cpu").target_probabilities(images)[1]
    exports = sorted((tmp_path / "cache" / "onnx").glob("*.onnx"))
    assert len(exports) == 1  # the features graph (the own head's logits are computed from the features too),
    assert not exports[0].name.startswith("features-")  # kept by the run's weights (onnx_runner), not re-fingerprinted
    stamps = [item.stat().st_mtime_ns for item in exports]
    again = Model.load(run, device="cpu").target_probabilities(images)[1]
    assert [item.stat().st_mtime_ns for item in exports] == stamps
    assert {item: item.stat().st_mtime_ns for item in run.rglob("*")} == before
    for name in TARGETS.split(","):
        np.testing.assert_allclose(again[name], first[name], rtol=1e-6)


def test_predict_writes_a_column_group_per_target_in_every_format(targets_run, tmp_path):
    _, run, rows = targets_run
    photos = copy_photos(rows["id"].iloc[::40], tmp_path / "photos")
    csv_out = tmp_path / "p.csv"
    result = run_cli("predict", str(run), str(photos), "--min-confidence", "0.9", "--top-k", "2", "--out",
                     str(csv_out))
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(csv_out, dtype=str, keep_default_na=False)
    for name in TARGETS.split(","):
        assert {name, f"{name}_probability", f"{name}_top_k"} <= set(table.columns)
    assert len(table) == 8 and set(table["articleType"]) <= set(KINDS)
    assert (table["label"] == table["articleType"]).all()  # the run's own head is the first target's (the leaf)
    for answer, level in zip(table["answer"], table["answered_level"]):
        assert level in ("", "masterCategory", "subCategory", "articleType")
        assert len(answer.split(" > ")) == (["", "masterCategory", "subCategory", "articleType"].index(level)
                                            if level else 1)
    assert (table["answered_level"] != "").mean() >= 0.75
    assert all(tag in set(card_tags(run)) for value in table["tags"] for tag in value.split("|") if tag)
    jsonl = tmp_path / "p.jsonl"
    assert run_cli("predict", str(run), str(photos), "--format", "jsonl", "--out", str(jsonl)).returncode == 0
    record = json.loads(jsonl.read_text().splitlines()[0])
    assert set(record["targets"]) == set(TARGETS.split(",")) and "top_k" in record["targets"]["gender"]
    parquet = tmp_path / "p.parquet"
    assert run_cli("predict", str(run), str(photos), "--format", "parquet", "--out", str(parquet)).returncode == 0
    frame = pd.read_parquet(parquet)
    assert "masterCategory_probability" in frame.columns and frame["targets"].iloc[0]["gender"]["label"]


def test_ray_predicts_every_target_and_answers_up_the_tree_like_one_process(targets_run, tmp_path):
    """--engine ray on a --targets run under --min-confidence: the same rows as the local engine, byte for byte."""
    try:
        import ray  # noqa: F401
    except ImportError:
        missing("ray is not installed (pip install -e '.[test]')")
    _, run, rows = targets_run
    photos = copy_photos(rows["id"].iloc[::20], tmp_path / "photos")
    written = {}
    for engine in ("local", "ray"):
        out = tmp_path / f"{engine}.csv"
        result = run_cli("predict", str(run), str(photos), "--min-confidence", "0.9", "--top-k", "2", "--engine",
                         engine, "--out", str(out))
        assert result.returncode == 0, result.stderr[-3000:]
        written[engine] = out.read_text()
    assert written["ray"] == written["local"]
    table = pd.read_csv(tmp_path / "ray.csv", dtype=str, keep_default_na=False)
    assert len(table) == 16 and {"answer", "answered_level", "gender_probability", "tags"} <= set(table.columns)
    assert (table["answered_level"] != "").sum() >= 12


def test_a_product_is_answered_per_target_from_all_its_images(targets_run):
    """A product dump (several images per product, as BSON gives): each target's and tag's probabilities are the
    mean of the product's images', as the label's are, and the tree answers from those means."""
    from catalens.data import DataOptions, load_catalog
    from catalens.inference.predict import output_records, predict_catalog
    from catalens.rundir.run import Model

    path, run, _ = targets_run
    catalog = load_catalog(f"csv:{path}", DataOptions(images=str(shared("fashion-products/images")), columns=COLUMNS,
                                                      label_column="articleType"), split=False)
    catalog = catalog.subset(np.arange(len(catalog)) % 40 < 1)  # 8 photos
    model = Model.load(run)
    result = predict_catalog(model, catalog, show_progress=False)
    singles, _, _, per_product = output_records(catalog, model, result, 1)
    assert len(singles) == 8 and not per_product
    catalog.table["product_id"] = [f"p{i // 2}" for i in range(len(catalog))]  # 4 products of 2 photos
    products, _, _, per_product = output_records(catalog, model, result, 1, min_confidence=0.9)
    assert per_product and len(products) == 4 and [record["images"] for record in products] == [2] * 4
    for i, record in enumerate(products):
        for name, head in model.targets.heads.items():
            mean = (result.targets[name][2 * i] + result.targets[name][2 * i + 1]) / 2
            assert record["targets"][name]["label"] == head.classes[int(mean.argmax())]
            assert record["targets"][name]["probability"] == pytest.approx(float(mean.max()), abs=1e-6)
        assert record["answered_level"] in ("", "masterCategory", "subCategory", "articleType")
        assert all(tag["tag"] in model.targets.tags.names for tag in record["tags"])


def card_tags(run) -> list[str]:
    return json.loads((run / "model_card.json").read_text())["targets"]["tags"]["names"]


def test_serve_answers_every_target(targets_run, tmp_path):
    from catalens.apps.serve import ServeOptions, create_app

    _, run, rows = targets_run
    image = shared(f"fashion-products/images/{rows['id'].iloc[0]}.jpg").read_bytes()
    app = create_app(str(run), ServeOptions(db=f"sqlite:///{tmp_path / 'h.db'}"))
    with TestClient(app) as client:
        answer = client.post("/v1/predict", files={"file": ("a.jpg", image, "image/jpeg")})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert set(body["targets"]) == set(TARGETS.split(","))
    assert body["targets"]["articleType"]["label"] == rows["articleType"].iloc[0]
    assert {entry["tag"] for entry in body["tags"]} <= set(card_tags(run))


def test_bad_target_input_says_what_to_do(targets_run, tmp_path):
    path, run, _ = targets_run
    with pytest.raises(CatalensError, match="has no column 'colour'; its columns are: id, gender"):
        train(data=f"csv:{path}", images=str(shared("fashion-products/images")), columns=COLUMNS,
              targets="articleType,colour", out=str(tmp_path / "bad"))
    result = run_cli("predict", str(run), str(path.parent), "--min-confidence", "1.5")
    assert result.returncode != 0 and "--min-confidence 1.5: give a probability in (0, 1]" in result.stderr
    assert "Traceback" not in result.stderr


def hand_made() -> Targets:
    """Apparel > {Topwear > {Tshirts, Shirts}, Bottomwear > {Jeans}}, Footwear > {Shoes > {Boots, Sandals}}; the
    leaf head reads a 5-d one-hot feature, the upper heads their own (unused unless compared)."""
    leaf = ["Boots", "Jeans", "Sandals", "Shirts", "Tshirts"]
    parents = {"leaf": {"Tshirts": "Topwear", "Shirts": "Topwear", "Jeans": "Bottomwear", "Boots": "Shoes",
                        "Sandals": "Shoes"},
               "sub": {"Topwear": "Apparel", "Bottomwear": "Apparel", "Shoes": "Footwear"}}
    eye = np.eye(5, dtype=np.float32)
    return Targets({"leaf": Head(leaf, eye * 10, np.zeros(5, np.float32)),
                    "sub": Head(["Bottomwear", "Shoes", "Topwear"], np.zeros((3, 5), np.float32), np.zeros(3)),
                    "top": Head(["Apparel", "Footwear"], np.zeros((2, 5), np.float32), np.zeros(2))},
                   ["top", "sub", "leaf"], parents)


def test_a_fine_tuned_run_trains_every_target_head_jointly(targets_run, tmp_path):
    """Fine-tuning (--freeze none): the other targets' heads train with the network (engine/joint.py), the best
    epoch's are stored, calibrated and read by predict; each beats chance by a wide margin."""
    path, _, rows = targets_run
    run = tmp_path / "joint"
    result = run_cli("train", "--data", f"csv:{path}", "--images", str(shared("fashion-products/images")),
                     "--columns", COLUMNS, "--targets", "articleType,subCategory,gender", "--model",
                     "tf_efficientnet_lite0", "--pretrained", "--freeze", "none", "--epochs", "2",
                     "--input-size", "128", "--batch-size", "32", "--out", str(run))
    # 128 px (a third of 224 px's compute), 6 steps an epoch: the heads move; at 128 px one step an epoch left gender
    # at 0.68 validation accuracy
    assert result.returncode == 0, result.stderr[-3000:]
    card = json.loads((run / "model_card.json").read_text())
    heads = card["targets"]["heads"]
    assert list(heads) == ["articleType", "subCategory", "gender"] and card["targets"]["tree"][-1] == "articleType"
    for name, chance in {"articleType": 1 / 8, "subCategory": 1 / 5, "gender": 1 / 2}.items():
        assert heads[name]["validation"]["accuracy"] > chance + 0.25, (name, heads[name])
    assert heads["gender"]["missing"] == 32 and (run / "joint_heads.safetensors").is_file()
    stored = {entry["name"]: entry["info"] for entry in json.loads((run / "targets.json").read_text())["targets"]}
    assert "trained jointly" in stored["gender"]["method"]
    assert all(stored[name]["moved_from_probe"] > 0.001 for name in ("subCategory", "gender"))  # in the loss
    assert stored["gender"]["loss_weight"] == round(np.log(8) / np.log(len(set(rows["gender"]) - {""})), 4)
    photos = copy_photos(rows["id"].iloc[::40], tmp_path / "photos")
    assert run_cli("predict", str(run), str(photos), "--min-confidence", "0.5", "--out",
                   str(tmp_path / "p.csv")).returncode == 0
    table = pd.read_csv(tmp_path / "p.csv", dtype=str, keep_default_na=False)
    assert len(table) == 8 and {"gender", "subCategory_probability", "answer"} <= set(table.columns)
    refused = run_cli("train", "--data", f"csv:{path}", "--images", str(shared("fashion-products/images")),
                      "--columns", COLUMNS, "--targets", "articleType,gender", "--tags", "style", "--model",
                      "tf_efficientnet_lite0", "--pretrained", "--freeze", "none", "--out", str(tmp_path / "no"))
    assert refused.returncode != 0 and "--tags only on cached features" in refused.stderr


def test_cached_activations_train_every_target_head_jointly_with_the_last_stage(targets_run, tmp_path):
    """--freeze 1 on cached activations (models/prefix_cache.py): the last stage and the other targets' heads train
    together; the stored heads read what the saved network computes, so predict on a reloaded run gives the
    validation accuracies the card reports."""
    from catalens.data import DataOptions, load_catalog
    from catalens.data.targets import column
    from catalens.loading.batches import make_batches
    from catalens.rundir.run import Model

    path, _, _ = targets_run
    run = tmp_path / "partial"
    result = run_cli("train", "--data", f"csv:{path}", "--images", str(shared("fashion-products/images")),
                     "--columns", COLUMNS, "--targets", "articleType,subCategory,gender", "--model",
                     "tf_efficientnet_lite0", "--pretrained", "--freeze", "1", "--epochs", "3", "--batch-size", "32",
                     "--out", str(run))
    assert result.returncode == 0, result.stderr[-3000:]  # 6 steps an epoch on 192 cached photos: the heads move
    card = json.loads((run / "model_card.json").read_text())
    assert card["training"]["cached_prefix_blocks"] == 6
    heads = card["targets"]["heads"]
    for name, chance in {"articleType": 1 / 8, "subCategory": 1 / 5, "gender": 1 / 2}.items():
        assert heads[name]["validation"]["accuracy"] > chance + 0.25, (name, heads[name])
    stored = {entry["name"]: entry["info"] for entry in json.loads((run / "targets.json").read_text())["targets"]}
    assert "trained jointly" in stored["gender"]["method"] and heads["gender"]["missing"] == 32
    assert all(stored[name]["moved_from_probe"] > 0.001 for name in ("subCategory", "gender"))
    model = Model.load(run, backend="torch")
    catalog = load_catalog(f"csv:{path}", DataOptions(images=str(shared("fashion-products/images")),
                                                      columns=COLUMNS, targets="articleType,subCategory,gender"))
    val = catalog.split("val")
    found: dict = {}
    for batch in make_batches(val, model.preprocessing, 64):
        for name, values in model.target_probabilities(batch.images)[1].items():
            found.setdefault(name, []).append(values)
    for name in ("subCategory", "gender"):
        truth = val.table[column(name)].to_numpy(object)
        given = truth != ""
        classes = np.array(model.targets.heads[name].classes)
        predicted = classes[np.concatenate(found[name]).argmax(1)]
        # the card's accuracy was measured on half-precision cached activations, this on the float network: at
        # most one photo apart
        assert abs((predicted[given] == truth[given]).mean() - heads[name]["validation"]["accuracy"]) <= \
            1.01 / given.sum()


def test_joint_heads_on_cached_activations_read_each_items_own_labels():
    """A cached batch's rows are positions in the cache, not catalog rows: attach_joint puts the labels in the
    cache's order (without it, every joint head trained on another photo's label)."""
    import torch

    from catalens.data.catalog import Catalog
    from catalens.engine.joint import JointTargets, attach_joint
    from catalens.engine.modes import Setup
    from catalens.models.features import FeatureBatches

    table = pd.DataFrame({"ref": ["a", "b", "c", "d"], "label": ["x", "y", "x", "y"], "split": "train",
                          "target:colour": ["Red", "Blue", "", "Green"]})
    catalog = Catalog(table, ["x", "y"], reader=None, source="hand-made")
    class Network(torch.nn.Module):  # what JointTargets reads of a timm network: its classifier's input size
        def __init__(self):
            super().__init__()
            self.classifier = torch.nn.Linear(3, 2)

        def get_classifier(self):
            return self.classifier

    module = Network()
    joint = JointTargets(module, catalog, ["label", "colour"], Path("."), resume=False)
    cached = FeatureBatches(torch.zeros(1, 4, 3), torch.tensor([1, 0, 1, 0]), 4, False, 0)
    cached.rows = torch.tensor([3, 1, 2, 0])  # the cache holds the catalog's rows in this order
    setup = Setup(module, cached, None, lambda x: x, lambda x: x)
    attach_joint(joint, setup, None, resume=False)
    batch = next(iter(cached))
    colours = [joint.classes["colour"][code] if code >= 0 else "" for code in joint.codes["colour"][batch.rows]]
    assert colours == [table["target:colour"][row] for row in cached.rows.tolist()] == ["Green", "Blue", "", "Red"]


def test_parents_are_the_sums_of_their_children_and_answers_back_off_up_the_tree():
    targets = hand_made()
    # Tshirts 0.55 / Shirts 0.42 (Topwear 0.97); Boots and Sandals even (Shoes sure); spread (Apparel 0.6); sure
    probabilities = {"leaf": np.array([[0.01, 0.01, 0.01, 0.42, 0.55], [0.48, 0.02, 0.48, 0.01, 0.01],
                                       [0.2, 0.3, 0.2, 0.15, 0.15], [0.0, 0.0, 0.0, 0.02, 0.98]])}
    membership_sub = targets.membership("sub", "leaf")
    probabilities["sub"] = probabilities["leaf"] @ membership_sub
    probabilities["top"] = probabilities["sub"] @ targets.membership("top", "sub")
    np.testing.assert_allclose(probabilities["sub"][0], [0.01, 0.02, 0.97])  # Bottomwear, Shoes, Topwear
    np.testing.assert_allclose(probabilities["top"][2], [0.6, 0.4])
    answers = targets.answers(probabilities, 0.9)
    assert answers == [("Apparel > Topwear", "sub"), ("Footwear > Shoes", "sub"), ("", ""),
                       ("Apparel > Topwear > Tshirts", "leaf")]
    assert targets.answers(probabilities, 0.5)[2] == ("Apparel", "top")
    # from features: the same sums, through the heads
    features = np.eye(5, dtype=np.float32)[[4]]
    out = targets.probabilities(features)
    np.testing.assert_allclose(out["top"].sum(1), 1, rtol=1e-5)
    np.testing.assert_allclose(out["sub"], out["leaf"] @ membership_sub, rtol=1e-6)
    assert out["own head: top"].shape == (1, 2)


def test_the_trees_answers_are_counted_and_a_threshold_is_found_for_a_share_right():
    targets = hand_made()
    probabilities = {"leaf": np.array([[0.01, 0.01, 0.01, 0.42, 0.55], [0.48, 0.02, 0.48, 0.01, 0.01],
                                       [0.2, 0.3, 0.2, 0.15, 0.15], [0.0, 0.0, 0.0, 0.02, 0.98]])}
    targets.sum_up(probabilities)
    truths = {"leaf": np.array(["Tshirts", "Boots", "Jeans", "Shirts"], object),
              "sub": np.array(["Topwear", "Shoes", "Bottomwear", "Topwear"], object),
              "top": np.array(["Apparel", "Footwear", "Apparel", "Apparel"], object)}
    at = targets.answer_counts(probabilities, truths, (0.5, 0.9, 0.985))
    # 0.9: Topwear and Shoes right at sub, Tshirts for a Shirts photo wrong at leaf, the spread photo unanswered
    assert at[1]["levels"] == {"top": {"answered": 0, "right": 0}, "sub": {"answered": 2, "right": 2},
                               "leaf": {"answered": 1, "right": 0}}
    assert (at[1]["coverage"], at[1]["accuracy_answered"]) == (0.75, 2 / 3)
    assert [row["accuracy_answered"] for row in at] == [0.75, 2 / 3, 1.0]  # 0.985: only the Shirts photo, at sub
    for row in at:  # the same answers as predict's
        given = targets.answers(probabilities, row["threshold"])
        assert sum(entry["answered"] for entry in row["levels"].values()) == sum(bool(level) for _, level in given)
    # 98 % right: from 0.985 on (at 0.98 the Tshirts answer is given again); 50 %: from the bottom of the grid
    assert targets.threshold_for(probabilities, truths, 0.98) == {"threshold": 0.985, "coverage": 0.25,
                                                                  "accuracy": 1.0}
    assert targets.threshold_for(probabilities, truths, 0.5) == {"threshold": 0.5, "coverage": 1.0, "accuracy": 0.75}
    assert targets.threshold_for(probabilities, truths, 0.7)["threshold"] == 0.985  # 0.5 passes, 0.9 does not
    sure_of_topwear = {"leaf": probabilities["leaf"][[0]] * [1, 1, 1, 1, 0.99] / 0.9945}
    targets.sum_up(sure_of_topwear)  # Topwear 0.99: nothing answered at 0.995, every threshold below it right
    assert targets.threshold_for(sure_of_topwear, {level: values[[0]] for level, values in truths.items()},
                                 0.98)["threshold"] == 0.5
    truths["sub"][3] = "Bottomwear"  # the only answer above 0.98 now wrong: no threshold gets there
    assert targets.threshold_for(probabilities, truths, 0.98) is None


def test_a_tree_is_found_and_a_value_with_two_parents_is_named():
    values = {"leaf": np.array(["Tshirts", "Shirts", "Jeans", "Boots", "Sandals", "Tshirts"], object),
              "top": np.array(["Apparel", "Apparel", "Apparel", "Footwear", "Footwear", "Apparel"], object),
              "sub": np.array(["Topwear", "Topwear", "Bottomwear", "Shoes", "Shoes", "Topwear"], object),
              "colour": np.array(["Red", "Blue", "Red", "Blue", "Red", "Blue"], object)}
    assert detect_tree(list(values), values) == ["top", "sub", "leaf"]
    assert check_tree(["top", "sub", "leaf"], values)["leaf"]["Jeans"] == "Bottomwear"
    values["sub"][5] = "Bottomwear"
    with pytest.raises(CatalensError, match="leaf 'Tshirts' has two parents in sub: 'Bottomwear' and 'Topwear'"):
        check_tree(["top", "sub", "leaf"], values)


def test_tag_metrics_and_thresholds_against_a_hand_computed_example():
    from catalens.engine.targets import best_threshold
    from catalens.report.targets import tag_metrics

    truth = np.array([[1, 0], [1, 1], [0, 1], [0, 0]])
    given = np.array([[1, 1], [0, 1], [0, 1], [1, 0]], bool)
    scores = np.array([[0.9, 0.6], [0.4, 0.8], [0.2, 0.7], [0.6, 0.1]])
    found = tag_metrics(truth, given, scores, ["a", "b"])
    # a: tp 1, predicted 2, support 2 -> P 0.5, R 0.5, F1 0.5; b: tp 2, predicted 3, support 2 -> P 2/3, R 1, F1 0.8
    assert found["per_tag"]["a"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert found["per_tag"]["b"]["f1"] == pytest.approx(0.8) and found["per_tag"]["b"]["recall"] == 1.0
    assert found["micro_f1"] == pytest.approx(2 * 3 / (5 + 4)) and found["macro_f1"] == pytest.approx(0.65)
    # average precision: a ranks 0.9 (+), 0.6 (-), 0.4 (+) -> (1 + 2/3) / 2; b ranks 0.8, 0.7 (+ +) -> 1
    assert found["map"] == pytest.approx(((1 + 2 / 3) / 2 + 1) / 2)
    # the threshold that maximises F1 on validation rows keeps both positives and drops the negative at 0.6
    assert 0.6 < best_threshold(np.array([0.9, 0.7, 0.6, 0.1]), np.array([1, 1, 0, 0])) <= 0.7
    assert best_threshold(np.array([0.9, 0.1]), np.array([0, 0])) == 0.5


def test_tag_thresholds_follow_the_rule_that_holds_out_of_sample():
    """Per-tag thresholds are kept only when, chosen on one half of the validation rows, they score a better
    micro-F1 on the other half than 0.5 does."""
    from catalens.engine.targets import choose_thresholds

    rng = np.random.default_rng(0)
    truth = (rng.random((200, 2)) < 0.5).astype(int)
    low = np.where(truth == 1, 0.3 + 0.1 * rng.random((200, 2)), 0.1 * rng.random((200, 2)))  # separable under 0.5
    thresholds, info = choose_thresholds(low, truth)
    assert info["rule"] == "each tag's F1" and (thresholds < 0.5).all()
    assert info["micro_f1_out_of_sample"]["each tag's F1"] == 1.0 and info["micro_f1_out_of_sample"]["0.5"] == 0.0
    clean = np.where(truth == 1, 0.6 + 0.4 * rng.random((200, 2)), 0.4 * rng.random((200, 2)))  # both rules: 1.0
    thresholds, info = choose_thresholds(clean, truth)
    assert info["micro_f1_out_of_sample"] == {"each tag's F1": 1.0, "0.5": 1.0}
    assert info["rule"] == "0.5" and (thresholds == 0.5).all()  # a tie keeps the sigmoid's own 0.5


def test_min_confidence_on_a_single_target_run_answers_with_its_label(small_model_dir, image_folder, tmp_path):
    out = tmp_path / "p.csv"
    result = run_cli("predict", str(small_model_dir), str(image_folder), "--min-confidence", "0.9", "--out", str(out))
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(out, dtype={"answer": str, "answered_level": str}, keep_default_na=False)
    sure = table["probability"] >= 0.9
    assert (table.loc[sure, "answer"] == table.loc[sure, "label"]).all()
    assert (table.loc[sure, "answered_level"] == "label").all()
    assert (table.loc[~sure, "answer"] == "").all() and (table.loc[~sure, "answered_level"] == "").all()
    assert 0 < sure.sum() <= len(table)


def test_sort_files_each_photo_where_predict_answers_it(targets_run, tmp_path):
    _, run, rows = targets_run
    photos = copy_photos(rows["id"].iloc[::20], tmp_path / "photos")
    answers = tmp_path / "answers.csv"
    assert run_cli("predict", str(run), str(photos), "--min-confidence", "0.99", "--out",
                   str(answers)).returncode == 0
    expected = {Path(row["input"]).name: row["answer"].replace(" > ", "/") or "uncertain"
                for row in pd.read_csv(answers, dtype=str, keep_default_na=False).to_dict("records")}
    refused = run_cli("sort", str(run), str(photos), str(tmp_path / "no"), "--min-confidence", "0.9", "--threshold",
                      "0.5")
    assert refused.returncode != 0 and "give --min-confidence or --threshold" in refused.stderr
    result = run_cli("sort", str(run), str(photos), str(tmp_path / "sorted"), "--min-confidence", "0.99")
    assert result.returncode == 0, result.stderr
    placed = {path.name: str(path.parent.relative_to(tmp_path / "sorted"))
              for path in (tmp_path / "sorted").rglob("*.jpg")}
    assert placed == expected and len(placed) == 16
    depths = {folder.count("/") for folder in placed.values()}
    assert len(depths) >= 2  # some photos answered above the leaf: in their parent's folder


def test_the_page_shows_every_target_as_a_labelled_chip(targets_run, tmp_path):
    from test_serve import CHROMIUM, LAYOUT_PROBLEMS, start_server, stop_server

    if not CHROMIUM.exists():
        missing("Debian's chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import expect, sync_playwright

    _, run, rows = targets_run
    upload = tmp_path / "upload.jpg"
    upload.write_bytes(shared(f"fashion-products/images/{rows['id'].iloc[0]}.jpg").read_bytes())
    process, url = start_server(run, f"sqlite:///{tmp_path / 'h.db'}")
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"])
            page = browser.new_page()
            page.goto(url)
            page.set_input_files("#file", str(upload))
            chips = page.locator("#chips .chip:not(.tag)")
            expect(chips).to_have_count(4)
            names = [chips.nth(i).locator(".name").inner_text() for i in range(4)]
            assert names == TARGETS.split(",")
            expect(chips.first).to_contain_text(rows["articleType"].iloc[0])
            assert page.locator("#chips .chip.tag").count() >= 1
            page.set_viewport_size({"width": 390, "height": 844})
            assert page.evaluate(LAYOUT_PROBLEMS) == []
            browser.close()
    finally:
        stop_server(process)


def test_a_nested_folder_gives_its_levels_as_targets(tmp_path):
    """Generated images (learnable stripes and blobs; structure, not accuracy): shop/<kind>/<pattern>/*.png, 2 levels
    deep; --targets level2,level1 makes the pattern the label and finds the tree; a photo at the wrong depth is
    listed, not trained on."""
    from conftest import pattern
    from PIL import Image

    from catalens.data import DataOptions, load_catalog

    root = tmp_path / "shop"
    kinds = {"stripes_h": "Stripes", "stripes_v": "Stripes", "blob": "Blobs"}
    for c, (name, kind) in enumerate(kinds.items()):
        folder = root / kind / name
        folder.mkdir(parents=True)
        for i in range(20):
            Image.fromarray(pattern(name, 40, seed=c * 100 + i)).save(folder / f"{i}.png")
    Image.fromarray(pattern("blob", 40, seed=999)).save(root / "Blobs" / "shallow.png")
    catalog = load_catalog(str(root), DataOptions(targets="level2,level1"), split=False)
    assert len(catalog) == 60 and catalog.classes == ["blob", "stripes_h", "stripes_v"]
    assert catalog.problems == [{"ref": "Blobs/shallow.png", "reason": "not 2 class folders deep (level1/level2)"}]
    assert sorted(set(catalog.table["target:level1"])) == ["Blobs", "Stripes"]
    run = tmp_path / "run"
    train(data=str(root), targets="level2,level1", model="tf_efficientnet_lite0", pretrained=True,
          freeze="backbone", out=str(run), split_ratios=(0.6, 0.4, 0.0))
    card = json.loads((run / "model_card.json").read_text())
    assert card["classes"] == ["blob", "stripes_h", "stripes_v"]
    assert card["targets"]["names"] == ["level2", "level1"] and card["targets"]["tree"] == ["level1", "level2"]
    with pytest.raises(CatalensError, match="the folder's class levels are aisle, product"):
        load_catalog(str(root), DataOptions(targets="level1", level_names="aisle,product"))
    with pytest.raises(CatalensError, match="--tags is read from a csv file's columns"):
        train(data=str(root), tags="style", model="tf_efficientnet_lite0", pretrained=True, freeze="backbone",
              out=str(tmp_path / "tags"))


def test_tag_columns_are_read_or_refused_in_one_line():
    from catalens.data.targets import read_tags

    table = pd.DataFrame({"style": ["a|b", "b", "", "a|c;d"], "striped": ["1", "0", "yes", ""],
                          "long": ["0", "1", "0", "1"]})
    tags, warnings = read_tags(table, ["style"], "t.csv")
    assert tags == ["a|b", "b", "", "a|c;d"]
    assert any("1 value(s) hold ',' or ';'" in w for w in warnings) and any("1 row(s)" in w for w in warnings)
    assert read_tags(table, ["striped", "long"], "t.csv")[0] == ["striped", "long", "striped", "long"]
    assert read_tags(table, ["striped"], "t.csv")[0] == ["striped", "", "striped", ""]  # one 0/1 column: a flag
    with pytest.raises(CatalensError, match="never '\\|'"):
        read_tags(pd.DataFrame({"style": ["a,b", "c"]}), ["style"], "t.csv")
    with pytest.raises(CatalensError, match="the column 'long' of t.csv holds 'x'"):
        read_tags(pd.DataFrame({"striped": ["1"], "long": ["x"]}), ["striped", "long"], "t.csv")
