"""`catalens predict --engine ray` on a real local Ray with 2 CPUs: a generated BSON dump (per product) and a
folder with broken files give output identical to the single-process path; an unreachable cluster and a missing
Ray are one-line errors."""

import sys
import time

import pytest
from conftest import add_bad_files, make_folder, missing, run_cli, shared

from catalens.data.bson_generate import generate_bson

try:
    import ray  # noqa: F401
except ImportError:
    ray = None


@pytest.fixture(autouse=True)
def needs_ray():
    if ray is None:
        missing("ray is not installed (pip install -e '.[test]')")


def compare(model_dir, data: str, tmp_path, *extra: str) -> str:
    local, distributed = tmp_path / "local.csv", tmp_path / "ray.csv"
    assert run_cli("predict", str(model_dir), data, "--out", str(local), *extra).returncode == 0
    result = run_cli("predict", str(model_dir), data, "--out", str(distributed), "--engine", "ray", *extra)
    assert result.returncode == 0, result.stderr[-3000:]
    assert distributed.read_text() == local.read_text()
    return local.read_text()


def test_ray_predicts_a_bson_dump_per_product_and_a_folder_like_one_process(small_model_dir, tmp_path):
    dump = tmp_path / "test.bson"
    generate_bson(dump, shared("clothing-small/train"), shared("cdiscount/category_names.csv"), products=120,
                  classes=4, photos=40, seed=3, test=True)
    text = compare(small_model_dir, f"bson:{dump}", tmp_path / "b")
    lines = text.splitlines()
    assert lines[0].startswith("input,label,probability,images") and len(lines) == 121
    folder = make_folder(tmp_path / "shop", per_class=10)
    broken = add_bad_files(folder)
    text = compare(small_model_dir, str(folder), tmp_path / "f", "--format", "jsonl")
    assert len(text.splitlines()) == 30 + len(broken) and text.count('"error"') == len(broken)


def test_unreachable_ray_cluster_is_a_one_line_error_within_30_s(small_model_dir, tmp_path):
    folder = make_folder(tmp_path / "shop", per_class=2)
    for address in ("10.255.255.1:6379", "ray://127.0.0.1:9"):
        started = time.time()
        result = run_cli("predict", str(small_model_dir), str(folder), "--engine", "ray", "--ray-address", address)
        assert time.time() - started < 30 and result.returncode == 2
        assert result.stderr.strip().splitlines()[-1].startswith(f"error: cannot reach the Ray cluster at {address}")


def test_missing_ray_names_the_extra(small_model_dir, tmp_path):
    folder = make_folder(tmp_path / "shop", per_class=2)
    code = ("import sys; sys.modules['ray'] = None; sys.argv = ['catalens', 'predict', sys.argv[1], sys.argv[2], "
            "'--engine', 'ray']; from catalens.cli import main; main()")
    import subprocess

    result = subprocess.run([sys.executable, "-c", code, str(small_model_dir), str(folder)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2 and result.stderr.strip() == \
        "error: --engine ray needs Ray: pip install 'catalens[ray]'"
