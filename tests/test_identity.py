"""One idea of "the same image" (catalens/data/identity.py): `--dedupe`, grouped splits, evaluate's leakage check
and the audit's duplicates agree on planted exact and near copies of real photos."""

import shutil

import numpy as np
from conftest import shared
from PIL import Image

from catalens.apps.audit.findings import duplicate_pairs
from catalens.data.catalog import Catalog
from catalens.data.dedupe import find_duplicates
from catalens.data.identity import compute_phashes, identify, identity_pairs
from catalens.data.leakage import training_overlap
from catalens.data.sources.folder import FileReader
from catalens.data.splits import GROUP_DISTANCE


def catalog_of(paths):
    return Catalog.from_records({"ref": [str(p) for p in paths]}, classes=[], reader=FileReader("/"), source="t")


def test_dedupe_splits_leakage_and_audit_agree_on_planted_copies(tmp_path):
    photos = sorted((shared("clothing-small") / "train" / "hat").glob("*.jpg"))[:6]
    originals = []
    for i, photo in enumerate(photos):
        originals.append(tmp_path / f"original_{i}.jpg")
        shutil.copyfile(photo, originals[-1])
    exact = tmp_path / "exact_copy.jpg"
    shutil.copyfile(originals[0], exact)
    near = tmp_path / "near_copy.jpg"  # re-encoded at a lower quality and 90 % of the size: other bytes
    with Image.open(originals[1]) as image:
        image.convert("RGB").resize((image.width * 9 // 10, image.height * 9 // 10)).save(near, quality=70)
    tiny = tmp_path / "tiny.png"  # under 64 px: exact copies only, never a pHash neighbour
    with Image.open(originals[2]) as image:
        image.convert("RGB").resize((28, 28)).save(tiny)
    paths = [*originals, exact, near, tiny]
    identities = identify(catalog_of(paths))
    assert identities.hashed.all() and identities.small.tolist() == [False] * 8 + [True]

    # --dedupe: one kept per cluster; the exact copy is exact, the re-encoded one near
    hashes = compute_phashes(paths)
    assert hashes[-1] is None and None not in hashes[:-1]
    duplicates = find_duplicates(paths, np.array([h or 0 for h in hashes], np.uint64), max_distance=4,
                                 valid=np.array([h is not None for h in hashes]))
    assert sorted(map(sorted, duplicates.clusters)) == [[0, 6], [1, 7]]
    assert (duplicates.exact, duplicates.near) == (1, 1)

    # grouped splits: the same two pairs, nothing else
    pairs, _ = identity_pairs(identities.exact, identities.phash, identities.searchable, GROUP_DISTANCE)
    assert set(map(tuple, pairs.tolist())) == {(0, 6), (1, 7)}

    # evaluate's leakage check: the copies, evaluated against the originals as training images
    overlap = training_overlap(catalog_of([exact, near, tiny]), catalog_of(originals), max_distance=4)
    assert (overlap.exact, overlap.near) == (1, 1)
    assert {e["evaluated"]: e["kind"] for e in overlap.examples} == {str(exact): "exact", str(near): "near"}

    # the audit: the same pairs, by bytes and by pHash (no embeddings given)
    found = duplicate_pairs(identities.exact, identities.phash, identities.hashed, np.zeros((9, 1)),
                            np.zeros((9, 1), np.int64), phash_bits=4, small=identities.small)
    assert sorted(found) == [(0, 6), (1, 7)]
    assert found[(0, 6)][1] == "identical bytes" and found[(1, 7)][1].startswith("pHash")
