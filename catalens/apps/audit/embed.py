"""What the audit knows about each image besides its features (inference/embeddings.py): facts from its bytes
(sha256, size, perceptual hash), or why it cannot be read."""

from __future__ import annotations

import hashlib
import io
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from PIL import Image

from catalens.data.catalog import Catalog
from catalens.data.images import describe_failure, load_image
from catalens.data.shards import image_bytes
from catalens.progress import make_progress


@dataclass
class Facts:
    digest: list[str | None]  # sha256 of the image's bytes (of the pixels for in-memory images)
    width: np.ndarray
    height: np.ndarray
    phash: np.ndarray  # uint64 perceptual hash
    hashed: np.ndarray  # bool: the hash is valid
    failures: dict[int, str]


def image_facts(catalog: Catalog, threads: int = 4) -> Facts:
    """sha256, width, height and 64-bit pHash of every image, in threads (decoding releases the GIL)."""
    import imagehash

    n = len(catalog)
    refs = catalog.table["ref"].tolist()

    def one(row: int):
        try:
            if catalog.arrays is not None:
                pixels = np.ascontiguousarray(catalog.arrays[int(refs[row])])
                digest = hashlib.sha256(pixels.tobytes()).hexdigest()
                image = Image.fromarray(pixels)
                width, height = image.size
            else:
                data, _ = image_bytes(catalog, refs[row])
                digest = hashlib.sha256(data).hexdigest()
                with Image.open(io.BytesIO(data)) as header:
                    width, height = header.size
                image = load_image(io.BytesIO(data), draft_size=(128, 128))
            return digest, width, height, int(str(imagehash.phash(image)), 16), None
        except Exception as error:  # noqa: BLE001 - a broken image is a finding, not a crash
            return None, 0, 0, 0, describe_failure(error)

    results = [None] * n
    with make_progress() as bar, ThreadPoolExecutor(threads) as pool:
        task = bar.add_task("hashes", total=n)
        for row, result in enumerate(pool.map(one, range(n), chunksize=64)):
            results[row] = result
            bar.advance(task)
    return Facts(
        digest=[r[0] for r in results], width=np.array([r[1] for r in results]),
        height=np.array([r[2] for r in results]), phash=np.array([r[3] for r in results], dtype=np.uint64),
        hashed=np.array([r[4] is None for r in results]), failures={i: r[4] for i, r in enumerate(results) if r[4]})
