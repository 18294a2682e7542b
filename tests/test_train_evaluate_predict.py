"""End to end on generated image folders: train, resume, evaluate, predict, bad files."""

import csv
import json
import os

import pytest
from conftest import CLASSES, add_bad_files, make_folder, missing

import catalens
from catalens import CatalensError
from catalens.rundir.run import Model

METRIC_KEYS = {"accuracy", "top_k_accuracy", "macro_f1", "weighted_f1", "per_class", "confusion_matrix", "classes",
               "num_params", "model_size_mb", "latency_ms_batch1", "throughput_images_per_s"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A cnn3 trained on a folder of generated images that also holds three unreadable files."""
    root = tmp_path_factory.mktemp("e2e")
    data = make_folder(root / "shop", per_class=40)
    add_bad_files(data)
    result = catalens.train(data=str(data), model="cnn3", out=str(root / "run"), epochs=6, input_size=32,
                            batch_size=16, lr=0.02, augment="none", workers=0, seed=1)
    return data, result


def test_run_directory_contents(trained):
    _, result = trained
    run = result.run_dir
    from catalens.rundir import layout

    # the one place that names the run directory's files: this run (with unreadable images) writes all of them but
    # those of --text and --targets runs and of `catalens export`, and nothing else
    assert sorted(path.name for path in run.iterdir()) == sorted(
        set(layout.FILES) - {layout.TEXT_FILE, layout.TEXT_WEIGHTS_FILE, layout.TARGETS_FILE,
                             layout.TARGETS_WEIGHTS_FILE, layout.ONNX_FILE, layout.INT8_FILE})
    card = json.loads((run / "model_card.json").read_text())
    assert card["architecture"] == "cnn3" and card["classes"] == sorted(CLASSES)
    assert card["preprocessing"]["input_size"] == [32, 32] and card["preprocessing"]["channels"] == 3
    assert len(card["data"]["fingerprint"]) == 16
    with (run / "history.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == 6


def test_unreadable_images_are_warned_counted_and_listed(trained):
    _, result = trained
    with (result.run_dir / "problems.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    names = sorted(row["ref"].rsplit("/", 1)[-1] for row in rows)
    # the zero-byte file is found while listing the folder, the other two when decoding
    assert names == ["empty.jpg", "notes.jpg", "truncated.jpg"]
    assert all(row["reason"] for row in rows)


def test_learns_the_generated_patterns(trained):
    _, result = trained
    assert result.metrics["accuracy"] >= 0.8


def test_evaluate_writes_full_report(trained, tmp_path):
    data, result = trained
    metrics = catalens.evaluate(result.run_dir, data=str(data), out=tmp_path / "eval", split="val")
    assert METRIC_KEYS <= set(metrics)
    assert set(metrics["per_class"]) == set(CLASSES)
    for row in metrics["per_class"].values():
        assert set(row) == {"precision", "recall", "f1", "npv", "support"}
    assert sum(sum(r) for r in metrics["confusion_matrix"]) == metrics["items"]
    assert metrics["top_k_accuracy"]["3"] == 1.0  # three classes: the truth is always in the top 3
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert saved["accuracy"] == metrics["accuracy"]
    report = (tmp_path / "eval" / "report.md").read_text()
    assert "confusion_matrix.png" in report and "NPV" in report
    for name in ("confusion_matrix.png", "confusion_matrix_normalized.png"):
        assert (tmp_path / "eval" / name).stat().st_size > 1000


def test_predict_files_and_folders(trained, tmp_path):
    data, result = trained
    out = tmp_path / "pred.jsonl"
    summary = catalens.predict(result.run_dir, [str(data / "blob")], k=2, output_format="jsonl", out=out)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert summary["predicted"] == 40 and len(lines) == 40
    assert all(len(line["top_k"]) == 2 for line in lines)
    assert sum(line["label"] == "blob" for line in lines) >= 32
    model = Model.load(result.run_dir)
    top = model.predict([next((data / "stripes_v").rglob("*.png"))], k=3)[0]
    assert [label for label, _ in top][0] == "stripes_v" and abs(sum(p for _, p in top) - 1) < 1e-4
    csv_out = tmp_path / "pred.csv"
    summary = catalens.predict(result.run_dir, [str(data / "stripes_h")], output_format="csv", out=csv_out)
    rows = list(csv.DictReader(csv_out.open()))
    assert summary["failed"] == 3 and sum(1 for row in rows if row["error"]) == 3


def test_resume_continues_an_interrupted_run(tmp_path):
    data = make_folder(tmp_path / "shop", per_class=10)
    out = tmp_path / "run"
    catalens.train(data=str(data), model="cnn3", out=str(out), epochs=1, input_size=32, workers=0)
    first = (out / "history.csv").read_text().splitlines()
    # a second run into the same directory is refused; --resume with more epochs continues it
    with pytest.raises(CatalensError, match="already exists"):
        catalens.train(data=str(data), model="cnn3", out=str(out), epochs=1, input_size=32, workers=0)
    from catalens.engine.config import make_config

    config = make_config(out / "config.yaml", epochs=3)
    catalens.train(config, resume=True)
    lines = (out / "history.csv").read_text().splitlines()
    assert lines[:2] == first and [line.split(",")[0] for line in lines[1:]] == ["1", "2", "3"]


def test_model_that_does_not_match_the_data(trained, tmp_path):
    _, result = trained
    other = make_folder(tmp_path / "other", per_class=3)
    (other / "blob").rename(other / "hats")
    with pytest.raises(CatalensError, match="does not match the data"):
        catalens.evaluate(result.run_dir, data=str(other), out=tmp_path / "e")


def test_resume_after_kill_9(tmp_path):
    """A run killed with SIGKILL mid-training continues from its last finished epoch, without duplicate epochs."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    data = make_folder(tmp_path / "shop", per_class=40)
    out = tmp_path / "run"
    executable = Path(sys.executable).parent / "catalens"
    args = [str(executable), "train", "--data", str(data), "--model", "cnn3", "--epochs", "40", "--input-size", "32",
            "--batch-size", "8", "--workers", "0", "--out", str(out)]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:
        if (out / "checkpoint.pt").exists() and torch_load_epoch(out / "checkpoint.pt") >= 2:
            break  # (history.csv gets an epoch's row just before its checkpoint: wait for the checkpoint)
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    done = torch_load_epoch(out / "checkpoint.pt")
    assert 2 <= done < 40
    result = subprocess.run([str(executable), "train", "--out", str(out), "--resume", "--epochs", str(done + 2)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    epochs = [int(line.split(",")[0]) for line in (out / "history.csv").read_text().splitlines()[1:]]
    assert epochs == list(range(1, done + 3))
    assert Model.load(out, backend="torch").predict([next((data / "blob").rglob("*.jpg"))], k=1)


def torch_load_epoch(path) -> int:
    import torch

    return torch.load(path, weights_only=True)["epoch"]


def test_damaged_run_directory_is_a_clear_error(trained, tmp_path):
    import shutil

    _, result = trained
    copy = tmp_path / "copy"
    shutil.copytree(result.run_dir, copy)
    card = json.loads((copy / "model_card.json").read_text())
    card["architecture"] = "fastcnn"  # weights of a cnn3 under another architecture's name
    (copy / "model_card.json").write_text(json.dumps(card))
    with pytest.raises(CatalensError, match="does not fit the fastcnn"):
        Model.load(copy)


def test_ctrl_c_saves_the_run_and_exits_130(tmp_path):
    """Ctrl-C (SIGINT) in training: the finished epochs are kept, the run says how to resume, and the exit code is
    130, so `catalens train ... && catalens evaluate ...` stops instead of evaluating a half-trained model."""
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    data = make_folder(tmp_path / "shop", per_class=40)
    out = tmp_path / "run"
    executable = Path(sys.executable).parent / "catalens"
    args = [str(executable), "train", "--data", str(data), "--model", "cnn3", "--epochs", "2000", "--input-size", "32",
            "--batch-size", "8", "--workers", "0", "--out", str(out)]
    # as in a terminal: a process started in the background by a non-interactive shell (CI's `... &`) gets SIGINT
    # ignored, and its children inherit that (`bash -c 'python3 -c "import signal;
    # print(signal.getsignal(signal.SIGINT))" & wait'` prints 1), so the child restores the default first. A test
    # that leaks a handler in this process is caught by conftest's no_signal_handler_left_changed.
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "CATALENS_NO_PROGRESS": "1"},
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "checkpoint.pt").exists():
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "--resume" in stderr and "Traceback" not in stderr
    assert (out / "checkpoint.pt").exists() and (out / "model.safetensors").exists()


def test_evaluate_holds_out_the_test_split_however_the_training_data_is_spelled(tmp_path):
    """Trained on `--data shop` (a folder without splits), evaluated as `shop`, `/abs/path/shop`, `./x/../shop`
    or a copy of it elsewhere: always the held-out test split, never the training images."""
    import shutil

    from conftest import run_cli

    make_folder(tmp_path / "shop", per_class=40)
    result = run_cli("train", "--data", "shop", "--model", "cnn3", "--epochs", "1", "--input-size", "32",
                     "--workers", "0", "--out", "run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    shutil.copytree(tmp_path / "shop", tmp_path / "elsewhere" / "copy")
    (tmp_path / "x").mkdir()
    spellings = ["shop", str(tmp_path / "shop"), "./x/../shop", str(tmp_path / "elsewhere" / "copy")]
    for number, spelling in enumerate(spellings):
        out = tmp_path / f"eval{number}"
        result = run_cli("evaluate", "run", "--data", spelling, "--out", str(out), cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["split"] == "test" and metrics["items"] == 12, (spelling, metrics["split"], metrics["items"])


def test_loading_a_run_never_writes_into_it(trained, tmp_path, monkeypatch):
    """Model.load on CPU with onnxruntime exports the network once into the user cache ($CATALENS_CACHE), not
    into the run directory (read-only, or loaded by two processes at once); the second load reuses the export."""
    from catalens.models.onnx_backend import onnx_available

    if not onnx_available():
        missing("onnxruntime is not installed (a dependency of catalens: pip install -e '.[test,lite]')")
    _, result = trained
    monkeypatch.setenv("CATALENS_CACHE", str(tmp_path / "cache"))
    before = {path: path.stat().st_mtime_ns for path in result.run_dir.rglob("*")}
    model = Model.load(result.run_dir, backend="onnx", device="cpu")
    assert {path: path.stat().st_mtime_ns for path in result.run_dir.rglob("*")} == before
    exports = list((tmp_path / "cache" / "onnx").glob("*.onnx"))
    assert len(exports) == 1 and model.backend == "onnx"
    stamp = exports[0].stat().st_mtime_ns
    again = Model.load(result.run_dir, backend="onnx", device="cpu")
    assert exports[0].stat().st_mtime_ns == stamp and again.backend == "onnx"


def test_model_card_is_typed_versioned_and_reads_format_1(trained, tmp_path):
    """The card round-trips through ModelCard (unknown keys kept); a run written with format 1 (before data
    identities and validation provenance) still loads, predicts and evaluates; an unknown format is one line."""
    import shutil

    from catalens.rundir.card import CARD_FORMAT, ModelCard

    data, result = trained
    raw = json.loads((result.run_dir / "model_card.json").read_text())
    assert raw["format"] == CARD_FORMAT == "catalens-model/2"
    card = ModelCard.from_dict(dict(raw, future_field={"x": 1}))
    assert card.classes == raw["classes"] and card.num_classes == len(raw["classes"])
    assert card.to_dict() == dict(raw, future_field={"x": 1})
    old = tmp_path / "old-run"
    shutil.copytree(result.run_dir, old, ignore=shutil.ignore_patterns("eval*"))
    legacy = {key: value for key, value in raw.items() if key != "validation_data"}
    legacy["format"] = "catalens-model/1"
    legacy["data"] = {key: value for key, value in raw["data"].items() if key not in ("identity", "content")}
    legacy["training"] = {key: value for key, value in raw["training"].items() if key != "head"}
    (old / "model_card.json").write_text(json.dumps(legacy))
    model = Model.load(old)
    assert model.card.validation_data["provenance"].startswith("not recorded") and model.card.training["head"] == "sgd"
    assert model.predict([next((data / "blob").rglob("*.png"))], k=1)[0][0][0] in model.classes
    metrics = catalens.evaluate(old, data=str(data), out=tmp_path / "eval-old")
    assert metrics["split"] == "test"  # format 1: the training data recognised by its source string
    (old / "model_card.json").write_text(json.dumps(dict(raw, format="catalens-model/9")))
    with pytest.raises(CatalensError, match="format 'catalens-model/9'"):
        Model.load(old)


def test_a_callback_sees_every_hook_and_can_stop_training(tmp_path):
    """Training has hook points: a user callback (here a logger and a stopping rule) needs no change to the loop."""
    from catalens.engine.trainer import Callback

    class Recorder(Callback):
        def __init__(self):
            self.events = []

        def on_epoch_start(self, trainer, epoch):
            self.events.append(("start", epoch))

        def on_batch_end(self, trainer, epoch, loss, size):
            self.events.append(("batch", epoch))

        def on_epoch_end(self, trainer, epoch, row, metrics):
            self.events.append(("end", epoch, round(row["train_loss"], 6), trainer.state.best_epoch))
            trainer.state.stop = epoch == 1  # stop after the second epoch

        def on_checkpoint(self, trainer, epoch):
            assert (trainer_dir / "checkpoint.pt").is_file()
            self.events.append(("checkpoint", epoch))

    data = make_folder(tmp_path / "shop", per_class=10)
    trainer_dir = tmp_path / "run"
    recorder = Recorder()
    catalens.train(data=str(data), model="cnn3", out=str(trainer_dir), epochs=5, input_size=32, workers=0,
                   callbacks=[recorder])
    kinds = [event[0] for event in recorder.events]
    assert kinds[0] == "start" and kinds.count("end") == 2 and kinds[-1] == "checkpoint"
    assert kinds.count("batch") >= 2 and [e[1] for e in recorder.events if e[0] == "end"] == [0, 1]
    history = (trainer_dir / "history.csv").read_text().splitlines()
    assert len(history) == 3  # header and the two epochs that ran
