"""What makes two images the same, in one place: for `--dedupe`, grouped splits, evaluate's leakage check, the
audit's duplicates and the marketplace matcher.

- The exact key: the sha256 of the image's bytes as stored (a file, a BSON picture, a downloaded object), or of
  its pixels and shape when it has no bytes (Fashion-MNIST arrays).
- The perceptual hash: imagehash's 64-bit pHash of the image decoded at about 128 px. Images under MIN_SIDE px on
  a side are neither hashed nor searched by it: on Fashion-MNIST's 28 px images, 28 % of the test images were
  "near duplicates" of some training image at 4 bits (perceptual hashes of tiny images collide).
- Pair search: multi-index hashing, not all pairs. A 64-bit hash is cut into d + 1 blocks, and two hashes within
  distance d agree exactly on at least one block (pigeonhole), so only hashes sharing a block value are compared.
  Clusters are the connected components of the pairs found.
"""

from __future__ import annotations

import hashlib
import io
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from catalens.checksums import file_digest
from catalens.data.catalog import Catalog
from catalens.data.images import describe_failure, load_image
from catalens.errors import CatalensError
from catalens.progress import make_progress

MIN_SIDE = 64  # smaller images are compared by their exact key only (see above)
THREADS = min(8, (os.cpu_count() or 1) * 2)  # decoding and hashing release the GIL

MAX_DISTANCE = 16  # beyond this, blocks get so short that every pair is a candidate: not a near duplicate


def parse_hash(text: str) -> int | None:
    """A 64-bit hash from hex (e.g. Shopee's image_phash, 16 hex digits), or None when it is not one."""
    try:
        value = int(str(text).strip(), 16)
    except ValueError:
        return None
    return value if 0 <= value < 1 << 64 else None


def popcount(values: np.ndarray) -> np.ndarray:
    """The set bits of each 64-bit value (an array, or one value)."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(values)
    flat = np.atleast_1d(np.asarray(values, dtype=np.uint64))  # numpy 1.x: count the bits of its bytes
    counts = np.unpackbits(flat.view(np.uint8).reshape(-1, 8), axis=1).sum(1)
    return counts.reshape(np.shape(values))


def near_pairs(hashes: np.ndarray, max_distance: int, bits: int = 64) -> np.ndarray:
    """All pairs (i < j) with Hamming distance <= max_distance, as an (n, 2) array, by multi-index hashing."""
    if not 0 <= max_distance <= MAX_DISTANCE:
        raise CatalensError(f"--max-distance must be between 0 and {MAX_DISTANCE} bits")
    hashes = np.asarray(hashes, dtype=np.uint64)
    blocks = max_distance + 1
    edges = np.linspace(0, bits, blocks + 1).astype(int)
    found = []
    for low, high in zip(edges[:-1], edges[1:]):
        mask = np.uint64((1 << int(high - low)) - 1)
        keys = (hashes >> np.uint64(low)) & mask
        order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]
        starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
        run_end = np.repeat(np.r_[starts[1:], len(order)], np.diff(np.r_[starts, len(order)]))
        active = np.arange(len(order))
        step = 1
        while True:  # compare each position with the one `step` further on in its run of equal keys
            active = active[active + step < run_end[active]]
            if not len(active):
                break
            a, b = order[active], order[active + step]
            close = popcount(hashes[a] ^ hashes[b]) <= max_distance
            if close.any():
                found.append(np.stack([a[close], b[close]], 1))
            step += 1
    if not found:
        return np.zeros((0, 2), np.int64)
    pairs = np.concatenate(found)
    pairs = np.sort(pairs, axis=1)
    return np.unique(pairs, axis=0)


def all_pairs(hashes: np.ndarray, max_distance: int, chunk: int = 2048) -> np.ndarray:
    """The naive baseline: every pair compared (quadratic); for benchmarks and tests."""
    hashes = np.asarray(hashes, dtype=np.uint64)
    found = []
    for start in range(0, len(hashes), chunk):
        block = hashes[start:start + chunk]
        distances = popcount(block[:, None] ^ hashes[None, :])
        i, j = np.nonzero(distances <= max_distance)
        i = i + start
        keep = i < j
        found.append(np.stack([i[keep], j[keep]], 1))
    return np.unique(np.concatenate(found), axis=0) if found else np.zeros((0, 2), np.int64)


def clusters_of(pairs: np.ndarray, n: int) -> np.ndarray:
    """Cluster number of each of n items (connected components of the pairs)."""
    if not len(pairs):
        return np.arange(n)
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def identity_pairs(exact: list, hashes: np.ndarray, valid: np.ndarray,
                   max_distance: int) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of rows that show the same image: equal exact keys (distance 0), or valid perceptual hashes within
    `max_distance` bits; (pairs (n, 2), their distances)."""
    first: dict = {}
    same = [(first.setdefault(key, row), row) for row, key in enumerate(exact) if key]
    same = np.array([pair for pair in same if pair[0] != pair[1]], np.int64).reshape(-1, 2)
    hashed = np.flatnonzero(valid)
    near = near_pairs(hashes[hashed], max_distance)
    near = hashed[near] if len(near) else np.zeros((0, 2), np.int64)
    distances = popcount(hashes[near[:, 0]] ^ hashes[near[:, 1]]) if len(near) else np.zeros(0, np.int64)
    return np.r_[same, near].astype(np.int64), np.r_[np.zeros(len(same), np.int64), distances]


def capped_clusters(pairs: np.ndarray, distances: np.ndarray, n: int, cap: int) -> np.ndarray:
    """Cluster number of each of n items: connected components of the pairs, joined closest pair first, except
    that no join makes a cluster bigger than `cap` (a chain of look-alikes stops there). Without a cap, on 9,583
    catalog photos shot on white, pairs within 6 bits of pHash chained 2,271 photos into one component."""
    parent, size = np.arange(n), np.ones(n, np.int64)

    def root(item: int) -> int:
        while parent[item] != item:
            parent[item] = parent[parent[item]]
            item = parent[item]
        return item

    for index in np.argsort(distances, kind="stable"):
        a, b = root(int(pairs[index, 0])), root(int(pairs[index, 1]))
        if a != b and size[a] + size[b] <= cap:
            if size[a] < size[b]:
                a, b = b, a
            parent[b], size[a] = a, size[a] + size[b]
    return np.unique([root(item) for item in range(n)], return_inverse=True)[1]


def file_digests(paths: list[Path]) -> list[str | None]:
    """sha256 of each file's bytes (None for a file that cannot be read), in threads."""

    def digest(path):
        try:
            return file_digest(path)
        except OSError:
            return None

    with ThreadPoolExecutor(THREADS) as pool:
        return list(pool.map(digest, paths))


def compute_phashes(paths: list[Path]) -> list[int | None]:
    """Perceptual hashes (imagehash.phash, 64 bits) of image files; None for one that cannot be decoded."""

    def of(path):
        try:
            image = draft(path)
            return phash(image) if min(image.size) >= MIN_SIDE else None
        except Exception:  # noqa: BLE001 - an unreadable image is reported by the caller
            return None

    with ThreadPoolExecutor(THREADS) as pool:
        return list(pool.map(of, paths))


def image_bytes(catalog: Catalog, ref) -> tuple[bytes, str]:
    """(bytes, extension) of one image: the original file or picture when there is one, else PNG."""
    reader = catalog.reader
    if catalog.arrays is None:
        if hasattr(reader, "raw"):
            data = reader.raw(ref)
        elif hasattr(reader, "picture"):  # BSON dumps
            data = reader.picture(ref)
        elif hasattr(reader, "path"):  # folders, downloaded URL caches
            data = reader.path(ref).read_bytes()
        else:
            data = None
        if data is not None:
            kind = Image.open(io.BytesIO(data))
            kind.verify()  # a broken file is a problem now, not in every later reader
            return data, {"JPEG": "jpg", "MPO": "jpg"}.get(kind.format, (kind.format or "png").lower())
    buffer = io.BytesIO()
    reader.read(ref).save(buffer, format="PNG")
    return buffer.getvalue(), "png"


def pixel_key(pixels: np.ndarray) -> str:
    """The exact key of an image held as an array: its pixels and their shape."""
    pixels = np.ascontiguousarray(pixels)
    return hashlib.sha256(pixels.tobytes() + str(pixels.shape).encode()).hexdigest()


def draft(source) -> Image.Image:
    """The image decoded at about 128 px (JPEG's draft mode), all a perceptual hash needs."""
    return load_image(source, draft_size=(128, 128))


def phash(image: Image.Image) -> int:
    import imagehash

    return int(str(imagehash.phash(image)), 16)


@dataclass
class Identities:
    """The identity of each row of a catalog."""
    exact: list[str | None]  # exact key; None: unreadable
    width: np.ndarray
    height: np.ndarray
    phash: np.ndarray  # uint64
    hashed: np.ndarray  # bool: read (and hashed, unless `small`: its phash is then 0)
    failures: dict[int, str]  # row -> why it could not be read

    @property
    def small(self) -> np.ndarray:
        return np.minimum(self.width, self.height) < MIN_SIDE

    @property
    def searchable(self) -> np.ndarray:
        """Rows whose perceptual hash may be searched for near copies."""
        return self.hashed & ~self.small


def identify(catalog: Catalog, threads: int = THREADS, progress: bool = False) -> Identities:
    """Exact key, size and perceptual hash of every image of the catalog, in threads."""
    refs = catalog.table["ref"].tolist()
    reader = catalog.reader
    files = catalog.arrays is None and hasattr(reader, "path")

    def one(ref):
        try:
            if catalog.arrays is not None:
                pixels = np.ascontiguousarray(catalog.arrays[int(ref)])
                height, width = pixels.shape[:2]
                key, image = pixel_key(pixels), Image.fromarray(pixels)  # an array PIL cannot read is reported
            else:
                if files:
                    path = reader.path(ref)
                    key, source = file_digest(path), lambda: path
                else:
                    data, _ = image_bytes(catalog, ref)
                    key, source = hashlib.sha256(data).hexdigest(), lambda: io.BytesIO(data)
                with Image.open(source()) as header:  # the size as stored, before the draft decode
                    width, height = header.size
                image = draft(source())  # decoded even when small: an unreadable file is reported
            # a small image's perceptual hash is never searched (Identities.searchable): not computed (for
            # Fashion-MNIST's 63,330 28 px arrays it took 21 of evaluate's 32 s)
            return key, width, height, phash(image) if min(width, height) >= MIN_SIDE else 0, None
        except Exception as error:  # noqa: BLE001 - an unreadable image is reported by the caller
            return None, 0, 0, 0, describe_failure(error)

    results = []
    with make_progress(disable=not progress) as bar, ThreadPoolExecutor(threads) as pool:
        task = bar.add_task("identifying images", total=len(refs))
        # arrays in memory: hashing their bytes is quicker than handing each to a thread
        for result in map(one, refs) if catalog.arrays is not None else pool.map(one, refs):
            results.append(result)
            bar.advance(task)
    return Identities(
        exact=[r[0] for r in results], width=np.array([r[1] for r in results], np.int64),
        height=np.array([r[2] for r in results], np.int64), phash=np.array([r[3] for r in results], np.uint64),
        hashed=np.array([r[4] is None for r in results], bool),
        failures={row: r[4] for row, r in enumerate(results) if r[4]})
