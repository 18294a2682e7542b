"""Data-parallel training through torchrun with gloo on CPU cores: one run directory from two processes that
trains like one process, per-rank shares of a file catalog, and a rank killed mid-run that stops the run with a
resume hint, after which `--resume` continues from the last checkpoint."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import make_folder, missing, run_cli, shared

from catalens.rundir.run import Model


@pytest.fixture(autouse=True)
def two_cores():
    """Two training processes need two CPU cores: under CI a machine with one fails here, it does not skip."""
    if (os.cpu_count() or 1) < 2:
        missing("two training processes need two CPU cores")
FASHION_SCHEDULE = ["--model", "fastcnn", "--limit", "3000", "--epochs", "3", "--seed", "0", "--batch-size", "128"]


def test_two_gloo_processes_write_one_run_that_evaluates_like_one_process(tmp_path):
    data = f"fashion-mnist:{shared('fashion-mnist')}"
    accuracy = {}
    for nproc in (1, 2):
        out = tmp_path / f"run{nproc}"
        result = run_cli("train", "--nproc", str(nproc), "--data", data, *FASHION_SCHEDULE, "--out", str(out))
        assert result.returncode == 0, result.stderr[-3000:]
        card = json.loads((out / "model_card.json").read_text())
        assert card["training"]["world_size"] == nproc and card["training"]["global_batch"] == 128
        assert card["training"]["batch_per_process"] == 128 // nproc
        history = (out / "history.csv").read_text().splitlines()
        assert [line.split(",")[0] for line in history[1:]] == ["1", "2", "3"]  # one writer: no doubled rows
        evaluation = run_cli("evaluate", str(out), "--data", data, "--out", str(tmp_path / f"eval{nproc}"))
        assert evaluation.returncode == 0, evaluation.stderr[-3000:]
        accuracy[nproc] = json.loads((tmp_path / f"eval{nproc}" / "metrics.json").read_text())["accuracy"]
    assert min(accuracy.values()) > 0.6 and abs(accuracy[1] - accuracy[2]) < 0.06, accuracy


def ranks_of(out: Path) -> dict[int, int]:
    """pid of each torchrun worker training into `out`, by RANK."""
    found = {}
    for entry in Path("/proc").iterdir():
        try:
            if str(out) not in (entry / "cmdline").read_bytes().decode(errors="replace") or not entry.name.isdigit():
                continue
            environment = dict(item.split("=", 1) for item in (entry / "environ").read_bytes().decode(
                errors="replace").split("\0") if "=" in item)
        except OSError:
            continue
        if "RANK" in environment and "TORCHELASTIC_RUN_ID" in environment:
            found[int(environment["RANK"])] = int(entry.name)
    return found


def test_a_rank_that_dies_stops_the_run_and_resume_continues(tmp_path):
    data = make_folder(tmp_path / "shop", per_class=40)
    out = tmp_path / "run"
    executable = Path(sys.executable).parent / "catalens"
    common = ["--batch-size", "8", "--workers", "0"]
    process = subprocess.Popen([str(executable), "train", "--nproc", "2", "--data", str(data), "--model", "cnn3",
                                "--epochs", "60", "--input-size", "32", *common, "--out", str(out)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "CATALENS_NO_PROGRESS": "1"})
    deadline = time.time() + 180
    while time.time() < deadline and not (out / "checkpoint.pt").exists():
        time.sleep(0.1)
    ranks = ranks_of(out)
    assert sorted(ranks) == [0, 1], ranks
    os.kill(ranks[1], signal.SIGKILL)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode != 0
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("error: training stopped") and f"--out {out} --resume --nproc 2" in last, last
    history = (out / "history.csv").read_text().splitlines()
    done = len(history) - 1
    assert 1 <= done < 60
    resumed = run_cli("train", "--out", str(out), "--resume", "--epochs", str(done + 1), "--nproc", "2")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    epochs = [int(line.split(",")[0]) for line in (out / "history.csv").read_text().splitlines()[1:]]
    assert epochs[-1] == done + 1 and epochs == sorted(set(epochs))
    assert Model.load(out, backend="torch").predict([next((data / "blob").rglob("*.jpg"))], k=1)


@pytest.mark.parametrize("args, message", [
    (["--nproc", "64", "--model", "cnn3"], "this machine has"),
    (["--nproc", "2", "--batch-size", "7", "--model", "cnn3"], "must divide by the 2 processes"),
    (["--nproc", "2"], "--nproc needs an explicit --model"),
])
def test_data_parallel_mistakes_are_one_line(tmp_path, args, message):
    data = make_folder(tmp_path / "shop", per_class=4)
    result = run_cli("train", "--data", str(data), "--out", str(tmp_path / "run"), *args)
    assert result.returncode == 2 and message in result.stderr, result.stderr[-2000:]
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "run").exists()
