"""Fashion-MNIST and MNIST in their original IDX files (.gz or raw), held in memory as arrays.

Data specs: `fashion-mnist` (looked up in $CATALENS_DATA, the user cache, Debian's
/usr/share/datasets/fashion-mnist, else downloaded), `fashion-mnist:DIR`, `mnist:DIR`.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

from catalens.cache import cache_root
from catalens.data.catalog import ArrayReader, Catalog
from catalens.errors import CatalensError
from catalens.files import write_atomic
from catalens.progress import info

FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
MNIST_CLASSES = [str(digit) for digit in range(10)]

FILES = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}
# sha256 of the *decompressed* files: Debian and mirrors recompress, the content is what must match.
FASHION_MNIST_SHA256 = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
FASHION_MNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_bytes(path: Path) -> bytes:
    """The decompressed content of an IDX file, .gz or raw."""
    try:
        data = path.read_bytes()
        return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
    except (OSError, EOFError, gzip.BadGzipFile) as error:
        raise CatalensError(f"cannot read {path}: {error}; re-download or replace the file") from error


def parse_idx(data: bytes, name: str) -> np.ndarray:
    """Parse IDX bytes, checking the header against the payload size."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in IDX_DTYPES:
        raise CatalensError(f"{name} is not an IDX file (bad magic number); replace it with the original file")
    dtype = np.dtype(IDX_DTYPES[data[2]])
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise CatalensError(f"{name}: IDX header is cut short; the file is truncated")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise CatalensError(
            f"{name}: IDX header says shape {shape} ({expected} bytes) but the file has {len(data)} bytes; "
            "the file is truncated or mismatched"
        )
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)


def find_file(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / f"{stem}.gz", folder / stem, folder / "raw" / f"{stem}.gz", folder / "raw" / stem):
        if candidate.is_file():
            return candidate
    return None


def has_dataset(folder: Path) -> bool:
    return all(find_file(folder, stem) for stem in FILES.values())


def candidate_dirs(explicit: str | None) -> list[Path]:
    if explicit:
        return [Path(explicit).expanduser()]
    found = []
    if os.environ.get("CATALENS_DATA"):
        base = Path(os.environ["CATALENS_DATA"]).expanduser()
        found += [base / "fashion-mnist", base]
    found += [cache_root() / "fashion-mnist", DEBIAN_DIR]
    return found


def download_fashion_mnist(target: Path) -> None:
    """Download the four files from the official source, verifying the decompressed bytes."""
    target.mkdir(parents=True, exist_ok=True)
    for stem, sha in FASHION_MNIST_SHA256.items():
        destination = target / f"{stem}.gz"
        if destination.exists() and hashlib.sha256(read_bytes(destination)).hexdigest() == sha:
            continue
        info(f"downloading {stem}.gz from {FASHION_MNIST_URL}")
        try:
            with urllib.request.urlopen(FASHION_MNIST_URL + f"{stem}.gz", timeout=30) as response:
                payload = response.read()
        except (urllib.error.URLError, TimeoutError, OSError) as error:
            raise CatalensError(
                f"Fashion-MNIST is not on this machine and downloading it failed ({error}). Offline, install "
                "Debian's package (apt-get install dataset-fashion-mnist), or put the four IDX files in a folder "
                "and pass fashion-mnist:DIR or set CATALENS_DATA"
            ) from error
        if hashlib.sha256(gzip.decompress(payload)).hexdigest() != sha:
            raise CatalensError(f"downloaded {stem}.gz does not match its checksum; try again later")
        write_atomic(destination, payload)


def locate(spec_dir: str | None, dataset: str) -> Path:
    if dataset != "fashion-mnist" and not spec_dir:
        raise CatalensError(f"{dataset} needs the folder of its IDX files: {dataset}:DIR")
    searched = candidate_dirs(spec_dir)
    for folder in searched:
        if has_dataset(folder):
            return folder
    if spec_dir or dataset != "fashion-mnist":
        missing = [stem for stem in FILES.values() if not find_file(searched[0], stem)]
        raise CatalensError(
            f"{dataset} IDX files not found in {searched[0]} (missing: {', '.join(missing)}); "
            "the folder needs train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], "
            "t10k-images-idx3-ubyte[.gz] and t10k-labels-idx1-ubyte[.gz]"
        )
    target = cache_root() / "fashion-mnist"
    download_fashion_mnist(target)
    return target


def open_idx(dataset: str, spec_dir: str | None = None, verify_checksums: bool = False) -> Catalog:
    """Load an IDX dataset (its given train/test split kept) into an in-memory Catalog."""
    folder = locate(spec_dir, dataset)
    arrays, labels, splits = [], [], []
    for split in ("train", "test"):
        parsed = {}
        for kind in ("images", "labels"):
            path = find_file(folder, FILES[(split, kind)])
            data = read_bytes(path)
            if verify_checksums and dataset == "fashion-mnist":
                if hashlib.sha256(data).hexdigest() != FASHION_MNIST_SHA256[FILES[(split, kind)]]:
                    raise CatalensError(f"{path} does not match the official Fashion-MNIST checksum")
            parsed[kind] = parse_idx(data, str(path))
        images, targets = parsed["images"], parsed["labels"]
        if images.ndim != 3 or targets.ndim != 1:
            raise CatalensError(f"{folder}: expected 3-d images and 1-d labels, got {images.shape} and {targets.shape}")
        if len(images) != len(targets):
            raise CatalensError(
                f"{folder}: {split} has {len(images)} images but {len(targets)} labels; "
                "the files do not belong together"
            )
        arrays.append(images)
        labels.append(targets)
        splits += [split] * len(targets)
    images = np.concatenate(arrays)
    targets = np.concatenate(labels)
    names = FASHION_MNIST_CLASSES if dataset == "fashion-mnist" else MNIST_CLASSES
    if targets.max() >= len(names):
        raise CatalensError(f"{folder}: label {int(targets.max())} is out of range for {len(names)} classes")
    n_train = len(arrays[0])
    item_ids = [f"train-{i:05d}" for i in range(n_train)] + [f"test-{i:05d}" for i in range(len(arrays[1]))]
    return Catalog.from_records(
        {
            "item_id": item_ids,
            "ref": np.arange(len(images)),
            "label": np.asarray(names, dtype=object)[targets],
            "split": splits,
        },
        classes=list(names),
        reader=ArrayReader(images),
        source=f"{dataset}:{folder}",
        channels=1,
        native_size=(images.shape[1], images.shape[2]),
        arrays=images,
    )
