import gzip

import numpy as np
import pytest
from conftest import CLASSES, add_bad_files, make_folder, shared

from catalens import CatalensError
from catalens.data.sources import open_source
from catalens.data.sources.idx import open_idx


def test_folder_source_recursive_with_classes(image_folder):
    catalog = open_source(str(image_folder))
    assert catalog.classes == sorted(CLASSES)
    assert len(catalog) == 90
    assert set(catalog.table["split"]) == {""}
    assert any("/sub/" in ref for ref in catalog.table["ref"])  # nested subfolders are searched
    image = catalog.read(0)
    assert image.mode == "RGB" and image.size == (40, 40)


def test_pre_split_folder(tmp_path):
    catalog = open_source(str(make_folder(tmp_path / "split", split_layout=True)))
    counts = catalog.table["split"].value_counts().to_dict()
    assert counts == {"train": 72, "val": 18}
    assert catalog.classes == sorted(CLASSES)


def test_bad_files_become_problems_not_crashes(image_folder):
    expected = add_bad_files(image_folder)
    catalog = open_source(str(image_folder), verify=True)
    reasons = {problem["ref"].rsplit("/", 1)[-1]: problem["reason"] for problem in catalog.problems}
    assert set(reasons) == set(expected)
    for name, fragment in expected.items():
        assert fragment in reasons[name]
    assert len(catalog) == 90  # every good image kept


def test_missing_and_empty_folders_are_clear_errors(tmp_path):
    with pytest.raises(CatalensError, match="does not exist"):
        open_source(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(CatalensError, match="no images found"):
        open_source(str(tmp_path / "empty"))


def write_idx(path, array: np.ndarray, compress: bool, magic_type: int = 0x08, lie_about: int | None = None):
    shape = list(array.shape)
    if lie_about is not None:
        shape[0] = lie_about
    header = bytes([0, 0, magic_type, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in shape)
    data = header + array.astype(np.uint8).tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)


def make_idx_dir(folder, compress=True, train=20, test=10, lie_about=None, labels_short=False):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", train), ("t10k", test)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte", rng.integers(0, 255, (n, 28, 28)), compress,
                  lie_about=lie_about if prefix == "train" else None)
        m = n - 1 if labels_short and prefix == "train" else n
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", np.arange(m) % 10, compress)
    return folder


@pytest.mark.parametrize("compress", [True, False])
def test_idx_source_gz_and_raw(tmp_path, compress):
    folder = make_idx_dir(tmp_path / "fm", compress=compress)
    catalog = open_source(f"fashion-mnist:{folder}")
    assert len(catalog) == 30 and catalog.arrays.shape == (30, 28, 28)
    assert catalog.channels == 1 and catalog.native_size == (28, 28)
    assert catalog.table["split"].value_counts().to_dict() == {"train": 20, "test": 10}
    assert catalog.table["label"].iat[1] == "Trouser"


def test_idx_header_mismatch_is_a_clear_error(tmp_path):
    folder = make_idx_dir(tmp_path / "bad", lie_about=25)
    with pytest.raises(CatalensError, match="header says"):
        open_source(f"fashion-mnist:{folder}")
    folder = make_idx_dir(tmp_path / "short", labels_short=True)
    with pytest.raises(CatalensError, match="20 images but 19 labels"):
        open_source(f"fashion-mnist:{folder}")
    with pytest.raises(CatalensError, match="not found"):
        open_source(f"fashion-mnist:{tmp_path / 'absent'}")


def test_fashion_mnist_lookup_order(tmp_path, monkeypatch):
    folder = make_idx_dir(tmp_path / "data" / "fashion-mnist")
    monkeypatch.setenv("CATALENS_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("CATALENS_CACHE", str(tmp_path / "cache" / "catalens"))
    catalog = open_source("fashion-mnist")
    assert str(folder) in catalog.source and len(catalog) == 30


@pytest.mark.integration
def test_real_fashion_mnist_checksums_and_split():
    folder = shared("fashion-mnist")
    catalog = open_idx("fashion-mnist", str(folder), verify_checksums=True)
    assert len(catalog) == 70_000
    assert catalog.table["split"].value_counts().to_dict() == {"train": 60_000, "test": 10_000}
    assert set(catalog.class_counts().values()) == {7_000}
