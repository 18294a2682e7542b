"""Decoding image files into RGB PIL images: every common format, EXIF orientation, odd modes."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".jfif", ".pgm", ".ppm"}
)

# Refuse absurd pixel counts (decompression bombs) with a clear error instead of a PIL warning.
Image.MAX_IMAGE_PIXELS = 178_956_970


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode (L, P, CMYK, I;16, RGBA, LA, ...) to 8-bit RGB; alpha is composited on white."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        peak = array.max() if array.size and array.max() > 255 else 255.0
        image = Image.fromarray((array * (255.0 / peak)).clip(0, 255).astype(np.uint8), mode="L")
    elif image.mode == "F":
        image = Image.fromarray(np.asarray(image).clip(0, 255).astype(np.uint8), mode="L")
    if image.mode == "P":
        image = image.convert("RGBA") if "transparency" in image.info else image.convert("RGB")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def load_image(source, draft_size: tuple[int, int] | None = None) -> Image.Image:
    """Open a path or file-like object and return a fully decoded RGB image.

    `draft_size` lets JPEG decoding skip detail the model will never see (DCT scaling), which makes
    decoding big photos for small inputs several times faster. Raises on any unreadable file.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            opened = Image.open(source)
        except UnidentifiedImageError:
            if isinstance(source, (str, Path)) and Path(source).stat().st_size == 0:
                raise ValueError("zero-byte file") from None
            raise
        with opened as image:
            image.seek(0)  # GIF/TIFF: first frame
            if draft_size is not None and image.format == "JPEG":
                image.draft("RGB", draft_size)
            image.load()
            image = ImageOps.exif_transpose(image)
            return to_rgb(image)


def describe_failure(error: BaseException) -> str:
    """A short, human reason for a failed decode."""
    text = str(error).strip() or type(error).__name__
    if isinstance(error, FileNotFoundError):
        return "file not found"
    if "cannot identify image file" in text:
        return "not an image (unknown format)"
    if "truncated" in text.lower():
        return "truncated image"
    return text.splitlines()[0][:200]


def check_image(path: Path) -> str | None:
    """Return None if `path` decodes as an image, else the reason it does not."""
    try:
        if path.stat().st_size == 0:
            return "zero-byte file"
        load_image(path, draft_size=(64, 64))
    except Exception as error:  # noqa: BLE001 - any decode failure is a data problem to report
        return describe_failure(error)
    return None
