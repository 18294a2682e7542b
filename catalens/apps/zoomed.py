"""The zoomed-vs-normal filter's training set, bootstrapped from normal product photos.

A "zoomed" catalog image shows only a close-up of the product (fabric, a button, a pocket, a label, a colour
swatch). Without a set of real ones, each normal photo yields a few, of four kinds:
- detail (50 %): a random crop covering a small share of the photo's area, centred on the product rather than the
  background, with varied scale, aspect and position;
- texture (20 %): a crop 3-10x smaller still, inside the product: fabric or pattern filling the frame edge to edge;
- pattern (20 %): a regular pattern in the product's own colours filling the frame: checks, stripes or a print of
  dots, with a fabric-like grain;
- swatch (10 %): two or three flat bands of the product's own colours, as catalogs show colour options.
Crops are resized back to the photo's size and sharpened (real close-ups are sharp; an upscaled crop is soft, and a
filter must not learn "soft = zoomed"). The photos themselves are the normal examples; give several folders
(`--from` twice) to cover several catalog styles, e.g. products on a table and models in a studio.

Catalogs use several aspect ratios (square, 3:4, narrow full-length portraits down to about 0.35 wide), so each
photo's examples, normal and zoomed alike, are cut to one drawn from `ASPECTS`: a normal photo only by its sides
and never into the product (a wide product keeps the narrowest aspect that holds it whole). The filter must see
the whole photo, not a centre crop (a crop of a narrow portrait is a torso: a close-up), so the dataset records
`"resize": "pad"` and `catalens train` on it uses that geometry unless --resize says otherwise.

    DATASET_DIR/train/normal/<photo>.jpg      DATASET_DIR/train/zoomed/<photo>_crop0.jpg ...
    DATASET_DIR/val/normal/...                DATASET_DIR/val/zoomed/...

The split is per source photo: a photo and all its crops are on the same side.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from catalens.data.images import describe_failure, is_image_file, load_image
from catalens.data.provenance import BOOTSTRAP_FILE
from catalens.data.sources.folder import walk_files
from catalens.errors import CatalensError
from catalens.files import check_outside
from catalens.progress import make_progress, warn

CLASSES = ("normal", "zoomed")
GEOMETRY = "pad"  # the resize a filter trained on this data uses (recorded in bootstrap.json)
# (aspect ratio width / height or None for the photo's own, probability): what catalog photos come in
ASPECTS = ((None, 0.4), (1.0, 0.15), (0.75, 0.2), ("narrow", 0.25))
NARROW = (0.35, 0.6)  # the range a "narrow" portrait's aspect is drawn from


@dataclass
class BootstrapSummary:
    photos: dict = field(default_factory=dict)  # split -> source photos
    images: dict = field(default_factory=dict)  # split -> {class: images}
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (photo, reason)

    def to_dict(self) -> dict:
        return {"photos": self.photos, "images": self.images, "skipped": len(self.skipped)}


def product_mask(image: Image.Image, size: int = 96) -> np.ndarray:
    """Where the product is, roughly, on a small copy of the photo: pixels far in colour from the border's
    typical colour (product photos are taken on a plain-ish background), inside the central ellipse (the
    product is framed in the middle; a patterned rug at the edges is not). Falls back to the central ellipse
    when too little stands out."""
    small = np.asarray(image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR), np.float32)
    border = np.concatenate([small[:4].reshape(-1, 3), small[-4:].reshape(-1, 3), small[:, :4].reshape(-1, 3),
                             small[:, -4:].reshape(-1, 3)])
    background = np.median(border, axis=0)
    distance = np.linalg.norm(small - background, axis=2)
    spread = np.percentile(np.linalg.norm(border - background, axis=1), 90)
    y, x = np.mgrid[0:size, 0:size] / (size - 1) - 0.5
    central = (x / 0.4) ** 2 + (y / 0.42) ** 2 <= 1
    mask = (distance > max(30.0, 1.5 * spread)) & central
    return mask if mask.mean() >= 0.05 else central


def random_crop_box(mask: np.ndarray, width: int, height: int, area: tuple[float, float],
                    rng: np.random.Generator, attempts: int = 30) -> tuple[int, int, int, int]:
    """A crop box (left, top, right, bottom) of `area` share of the photo, aspect 3:4 to 4:3, whose inside is
    mostly product (the best of `attempts` draws centred on product pixels)."""
    ys, xs = np.nonzero(mask)
    scale_y, scale_x = height / mask.shape[0], width / mask.shape[1]
    best, best_cover = None, -1.0
    for _ in range(attempts):
        share = rng.uniform(*area)
        aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
        crop_w = min(width, max(8, int(round(np.sqrt(share * width * height * aspect)))))
        crop_h = min(height, max(8, int(round(np.sqrt(share * width * height / aspect)))))
        pick = rng.integers(len(xs))
        centre_x, centre_y = (xs[pick] + rng.uniform()) * scale_x, (ys[pick] + rng.uniform()) * scale_y
        left = int(np.clip(centre_x - crop_w / 2, 0, width - crop_w))
        top = int(np.clip(centre_y - crop_h / 2, 0, height - crop_h))
        box = (left, top, left + crop_w, top + crop_h)
        inside = mask[int(top / scale_y):max(int(top / scale_y) + 1, int((top + crop_h) / scale_y)),
                      int(left / scale_x):max(int(left / scale_x) + 1, int((left + crop_w) / scale_x))]
        cover = float(inside.mean())
        if cover > best_cover:
            best, best_cover = box, cover
        if cover >= 0.9:
            break
    return best


def split_of(photo: Path, val_fraction: float, seed: int) -> str:
    """train or val, decided by a hash of the photo's name and the seed: stable, and the same for every crop."""
    digest = hashlib.sha256(f"{seed}:{photo.name}".encode()).digest()
    return "val" if int.from_bytes(digest[:8], "big") / 2**64 < val_fraction else "train"


def draw_aspect(rng: np.random.Generator) -> float | None:
    """An aspect ratio (width / height) from ASPECTS, None for the photo's own."""
    choice = ASPECTS[rng.choice(len(ASPECTS), p=[p for _, p in ASPECTS])][0]
    return float(rng.uniform(*NARROW)) if choice == "narrow" else choice


def narrowed(image: Image.Image, aspect: float | None, keep: tuple[int, int] | None = None) -> Image.Image:
    """The image with its sides cut to `aspect` (width / height), centred on the columns `keep` (left, right), which
    are never cut; an image already narrower, or no aspect, is returned as it is."""
    if aspect is None or image.width <= aspect * image.height:
        return image
    left, right = keep if keep is not None else (image.width // 2, image.width // 2)
    width = max(int(round(aspect * image.height)), right - left)
    if width >= image.width:
        return image
    start = int(np.clip((left + right) / 2 - width / 2, 0, image.width - width))
    return image.crop((start, 0, start + width, image.height))


def product_columns(mask: np.ndarray, width: int, margin: float = 0.04) -> tuple[int, int]:
    """The photo's columns (left, right) that hold product pixels, with a small margin."""
    columns = np.flatnonzero(mask.any(axis=0))
    if not len(columns):
        return 0, width
    scale = width / mask.shape[1]
    left = int(max(0, (columns[0] - margin * mask.shape[1]) * scale))
    right = int(min(width, (columns[-1] + 1 + margin * mask.shape[1]) * scale))
    return left, right


def close_up(image: Image.Image, mask: np.ndarray, area: tuple[float, float], rng: np.random.Generator):
    """One zoomed example from a normal photo (see the module doc for the four kinds)."""
    kind = rng.choice(["detail", "texture", "pattern", "swatch"], p=[0.5, 0.2, 0.2, 0.1])
    if kind == "swatch":
        return swatch(image, mask, rng)
    if kind == "pattern":
        return pattern(image, mask, rng)
    if kind == "texture":
        area = (max(0.002, area[0] / 10), max(0.004, area[0] / 2))
    box = random_crop_box(mask, image.width, image.height, area, rng)
    crop = image.crop(box).resize(image.size, Image.Resampling.BICUBIC)
    return crop.filter(ImageFilter.UnsharpMask(radius=2, percent=int(rng.uniform(60, 160)), threshold=2))


def swatch(image: Image.Image, mask: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """Two or three bands of colours taken from the product, with a little fabric-like noise."""
    small = np.asarray(image.convert("RGB").resize(mask.shape[::-1], Image.Resampling.BILINEAR), np.float32)
    colours = small[mask] if mask.any() else small.reshape(-1, 3)
    bands = int(rng.integers(2, 4))
    picks = colours[rng.integers(len(colours), size=bands)]
    height, width = image.height, image.width
    edges = np.sort(rng.uniform(0.2, 0.8, bands - 1)) if bands > 1 else np.array([])
    position = np.linspace(0, 1, height if rng.random() < 0.5 else width)
    index = np.searchsorted(edges, position)
    line = picks[index]
    array = (np.repeat(line[:, None], width, 1) if len(position) == height else np.repeat(line[None], height, 0))
    array = array + rng.normal(0, rng.uniform(2, 8), array.shape)
    return Image.fromarray(array.clip(0, 255).astype(np.uint8))


def pattern(image: Image.Image, mask: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """A regular pattern in colours taken from the product, filling the frame: checks, stripes or dots, at a
    random scale and angle, with fabric-like grain and a slight softness."""
    small = np.asarray(image.convert("RGB").resize(mask.shape[::-1], Image.Resampling.BILINEAR), np.float32)
    colours = small[mask] if mask.any() else small.reshape(-1, 3)
    first, second = colours[rng.integers(len(colours), size=2)]
    if np.linalg.norm(first - second) < 40:  # too alike to show a pattern: a darker or lighter second colour
        second = np.clip(first + (-80 if first.mean() > 128 else 80), 0, 255)
    height, width = image.height, image.width
    period = rng.uniform(0.04, 0.25) * min(width, height)
    angle = rng.uniform(0, np.pi)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    u, v = x * np.cos(angle) + y * np.sin(angle), -x * np.sin(angle) + y * np.cos(angle)
    kind = rng.choice(["checks", "stripes", "dots"])
    if kind == "checks":
        on = ((u // period) + (v // period)) % 2 == 0
    elif kind == "stripes":
        on = (u % period) < period * rng.uniform(0.2, 0.6)
    else:
        on = ((u % period - period / 2) ** 2 + (v % period - period / 2) ** 2) < (period * rng.uniform(0.15, 0.35)) ** 2
    array = np.where(on[..., None], first, second) + rng.normal(0, rng.uniform(3, 10), (height, width, 3))
    out = Image.fromarray(array.clip(0, 255).astype(np.uint8))
    return out.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.3, 1.2))))


def bootstrap(normal_dir: str | Path | list, out_dir: str | Path, crops_per_photo: float = 1.0,
              area: tuple[float, float] = (0.02, 0.15), val_fraction: float = 0.2, seed: int = 0,
              quality: int = 90, show_progress: bool = True) -> BootstrapSummary:
    """Write the zoomed-vs-normal dataset (see the module doc) from the photos under `normal_dir` (one folder or
    a list of folders)."""
    roots = [Path(folder) for folder in (normal_dir if isinstance(normal_dir, (list, tuple)) else [normal_dir])]
    out_dir = Path(out_dir)
    for root in roots:
        if not root.is_dir():
            raise CatalensError(f"--from {root} is not a folder of product photos")
    if not (0 < area[0] <= area[1] < 1):
        raise CatalensError("--area must be two shares of the photo's area, 0 < MIN <= MAX < 1 (e.g. 0.02,0.15)")
    if crops_per_photo <= 0:
        raise CatalensError("--crops-per-photo must be positive (a fraction such as 0.17 gives 1 zoomed per 6 "
                            "normal, like real catalogs)")
    if not 0 <= val_fraction <= 1:
        raise CatalensError("--val-share must be in [0, 1] (1: every photo in val/, for a held-out test set)")
    check_outside(out_dir, list(roots), "--out", "--from", "the crops would be read as photos next time")
    photos = [(root, path) for root in roots for path in walk_files(root) if is_image_file(path)]
    if not photos:
        raise CatalensError(f"no image files under {', '.join(map(str, roots))}")
    summary = BootstrapSummary()
    used_names: set[str] = set()
    with make_progress(disable=not show_progress) as bar:
        task = bar.add_task("bootstrapping", total=len(photos))
        for root, photo in photos:
            bar.advance(task)
            try:
                image = load_image(photo)
            except Exception as error:  # noqa: BLE001 - a bad photo is listed, the rest go on
                summary.skipped.append((str(photo), describe_failure(error)))
                continue
            split = split_of(photo.relative_to(root), val_fraction, seed)
            name = unique_stem(photo, root, used_names)
            rng = np.random.default_rng([seed, int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "big")])
            mask = product_mask(image)
            aspect = draw_aspect(rng)
            save(narrowed(image, aspect, product_columns(mask, image.width)), out_dir / split / "normal" /
                 f"{name}.jpg", quality)
            crops = int(crops_per_photo) + int(rng.random() < crops_per_photo % 1)
            for i in range(crops):
                save(narrowed(close_up(image, mask, area, rng), aspect), out_dir / split / "zoomed" /
                     f"{name}_crop{i}.jpg", quality)
            summary.photos[split] = summary.photos.get(split, 0) + 1
            counts = summary.images.setdefault(split, {"normal": 0, "zoomed": 0})
            counts["normal"] += 1
            counts["zoomed"] += crops
    if summary.skipped:
        warn(f"{len(summary.skipped)} photo(s) could not be read and were left out: "
             + "; ".join(f"{path} ({reason})" for path, reason in summary.skipped[:5]))
    (out_dir / BOOTSTRAP_FILE).write_text(json.dumps({
        "from": [str(root) for root in roots], "crops_per_photo": crops_per_photo, "area": list(area),
        "val_fraction": val_fraction, "resize": GEOMETRY,
        "aspects": "each photo's examples cut to: " + ", ".join(
            f"{'its own' if a is None else 'narrow 0.35-0.6' if a == 'narrow' else a} ({p:.0%})" for a, p in ASPECTS),
        "seed": seed, **summary.to_dict(), "skipped_photos": summary.skipped}, indent=2) + "\n")
    return summary


def unique_stem(photo: Path, root: Path, used: set[str]) -> str:
    """The photo's file stem, prefixed by its folders when two photos share a stem (class subfolders)."""
    stem = photo.stem
    if stem in used:
        stem = "_".join(photo.relative_to(root).with_suffix("").parts)
    while stem in used:
        stem += "_"
    used.add(stem)
    return stem


def save(image: Image.Image, path: Path, quality: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, quality=quality)
