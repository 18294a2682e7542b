"""`catalens bson generate`: write a BSON product dump in CDiscount's exact format, from real photos.

Every document is `{_id, imgs: [{picture: <JPEG bytes>}, ...], category_id}` (no `category_id` with
`test=True`), 1-4 images per product (mean 1.75, as in the real train.bson), 180x180 JPEGs made from the photos
in an image folder (padded to a square on white, like the real ones). Categories are leaves of the real tree,
drawn with a long-tailed frequency; each category is tied to one photo subfolder, so a model can learn them.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path

import bson
import numpy as np
from PIL import Image, ImageOps

from catalens.data.categories import DEFAULT_FILE, CategoryTree
from catalens.data.images import is_image_file, load_image
from catalens.data.sources.folder import walk_files
from catalens.errors import CatalensError
from catalens.progress import make_progress, progress, warn

SIDE = 180
IMAGES_PER_PRODUCT = (0.55, 0.25, 0.10, 0.10)  # 1, 2, 3, 4 images: mean 1.75 (12,371,293 / 7,069,896)


def parse_size(text: str | int | None) -> int | None:
    """'2GB', '500MB', '1.5G', '123456' -> bytes."""
    if text is None or isinstance(text, int):
        return text
    match = re.fullmatch(r"\s*([\d.]+)\s*([kmgt]?)i?b?\s*", str(text).lower())
    if not match:
        raise CatalensError(f"cannot read size {text!r}; write e.g. 2GB, 500MB or a number of bytes")
    return int(float(match.group(1)) * 1024 ** " kmgt".index(match.group(2) or " "))


def square_jpeg(image: Image.Image, quality: int, mirror: bool = False) -> bytes:
    image = ImageOps.pad(image, (SIDE, SIDE), color=(255, 255, 255), method=Image.Resampling.BILINEAR)
    if mirror:
        image = ImageOps.mirror(image)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def photo_pool(images: Path, quality: int, limit: int | None = None) -> dict[str, list[bytes]]:
    """180x180 JPEGs (each photo and its mirror image), grouped by the folder each photo is in. Photos that do
    not decode are left out with a warning that counts and names them."""
    paths = [path for path in walk_files(images) if is_image_file(path)]
    if not paths:
        raise CatalensError(f"no photos found in {images}; give --from a folder of product photos")
    if limit:
        paths = paths[:: max(1, len(paths) // limit)][:limit]
    groups: dict[str, list[bytes]] = {}
    unreadable = []
    for path in progress(paths, total=len(paths), description="encoding photos"):
        relative = path.relative_to(images).parts
        group = relative[-2] if len(relative) > 1 else ""
        try:
            image = load_image(path, draft_size=(2 * SIDE, 2 * SIDE))
        except Exception:  # noqa: BLE001 - a bad photo is not used as material
            unreadable.append(str(path))
            continue
        groups.setdefault(group, []).extend(square_jpeg(image, quality, mirror) for mirror in (False, True))
    if unreadable:
        warn(f"{len(unreadable)} photo(s) could not be decoded and were not used: {', '.join(unreadable[:5])}"
             + (" ..." if len(unreadable) > 5 else ""))
    if not groups:
        raise CatalensError(f"none of the photos in {images} could be decoded")
    return groups


@dataclass
class GenerateSummary:
    path: str
    products: int
    images: int
    bytes: int
    categories: int


def generate_bson(out: str | Path, images: str | Path, categories: str | Path, size: str | int | None = None,
                  products: int | None = None, classes: int = 50, test: bool = False, seed: int = 0,
                  quality: int = 75, photos: int | None = None) -> GenerateSummary:
    """Write `out` until it holds `products` products or reaches `size` bytes (one of them is required)."""
    limit_bytes = parse_size(size)
    if not limit_bytes and not products:
        raise CatalensError("give --size (e.g. 2GB) or --products N")
    out, images = Path(out), Path(images).expanduser()
    if not images.is_dir():
        raise CatalensError(f"--from {images} is not a folder of photos")
    tree = CategoryTree.read(categories)
    rng = np.random.default_rng(seed)
    groups = photo_pool(images, quality, photos)
    group_names = sorted(groups)
    leaf_ids = tree.table.index.to_numpy()
    chosen = rng.choice(leaf_ids, size=min(classes, len(leaf_ids)), replace=False)
    weights = 1.0 / np.arange(1, len(chosen) + 1) ** 0.7  # long-tailed, as in real catalogs
    weights /= weights.sum()
    photo_group = {int(category): group_names[i % len(group_names)] for i, category in enumerate(chosen)}
    out.parent.mkdir(parents=True, exist_ok=True)
    written = count = pictures = 0
    product_id = int(rng.integers(0, 10))
    target = limit_bytes or 0
    with open(out, "wb") as handle, make_progress() as bar:
        task = bar.add_task(f"writing {out.name}", total=limit_bytes or products)
        while (not products or count < products) and (not limit_bytes or written < target):
            category = int(rng.choice(chosen, p=weights))
            pool = groups[photo_group[category]]
            n = int(rng.choice(4, p=IMAGES_PER_PRODUCT)) + 1
            document = {"_id": product_id,
                        "imgs": [{"picture": bson.Binary(pool[int(i)])} for i in rng.integers(0, len(pool), n)]}
            if not test:
                document["category_id"] = category
            data = bson.encode(document)
            handle.write(data)
            written += len(data)
            count += 1
            pictures += n
            product_id += int(rng.integers(1, 4))
            bar.update(task, completed=written if limit_bytes else count)
    beside = out.with_name(DEFAULT_FILE)
    if not beside.exists():
        beside.write_bytes(Path(tree.path).read_bytes())  # like the real dump: the tree next to the file
    return GenerateSummary(str(out), count, pictures, written, len(chosen))
