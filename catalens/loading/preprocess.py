"""How an image becomes a model input. Saved in every model card so predict and serve do exactly what
training did: resize (shorter side to size / crop_pct, then centre crop), channels, scaling to [0, 1], mean/std.
A pretrained backbone brings its own (timm's pretrained config)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class Preprocessing:
    input_size: tuple[int, int]  # (height, width)
    channels: int  # 1 = grayscale, 3 = RGB
    mean: tuple[float, ...]
    std: tuple[float, ...]
    # "shorter-side-then-center-crop"; "squash": the whole image to the input size, aspect ignored; "pad": the whole
    # image scaled to fit, aspect kept, centred on a canvas of its own border colour
    resize: str = "shorter-side-then-center-crop"
    interpolation: str = "bilinear"  # bilinear | bicubic
    crop_pct: float = 1.0  # the centre crop's share of the resized shorter side (timm's crop_pct; 0.875: 256 -> 224)

    def to_dict(self) -> dict:
        return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> Preprocessing:
        return cls(
            input_size=tuple(data["input_size"]), channels=int(data["channels"]), mean=tuple(data["mean"]),
            std=tuple(data["std"]), resize=data.get("resize", cls.resize),
            interpolation=data.get("interpolation", cls.interpolation), crop_pct=float(data.get("crop_pct", 1.0)),
        )

    @classmethod
    def of_backbone(cls, settings: dict, input_size: tuple[int, int] | None = None,
                    resize: str = "shorter-side-then-center-crop") -> Preprocessing:
        """A pretrained backbone's own preprocessing (timm_preprocessing's settings: size, interpolation, crop,
        mean/std; RGB), at `input_size` when given."""
        return cls(input_size=tuple(input_size or settings["input_size"]), channels=3, mean=settings["mean"],
                   std=settings["std"], interpolation=settings["interpolation"], crop_pct=settings["crop_pct"],
                   resize=resize)

    def resize_plan(self, width: int, height: int) -> tuple[tuple[int, int], tuple[float, float, float, float]]:
        """For an image of width x height: the size it is resized to before the centre crop (what JPEG draft
        decoding needs to keep), and the crop as a box in the image's own coordinates."""
        out_h, out_w = self.input_size
        if self.resize == "squash":
            return (out_w, out_h), (0.0, 0.0, float(width), float(height))
        if self.resize == "pad":
            scale = min(out_w / width, out_h / height)
            return ((max(1, min(out_w, round(width * scale))), max(1, min(out_h, round(height * scale)))),
                    (0.0, 0.0, float(width), float(height)))
        scale = max(out_w / width, out_h / height) / self.crop_pct
        resized = (max(out_w, round(width * scale)), max(out_h, round(height * scale)))
        left, top = (resized[0] - out_w) // 2, (resized[1] - out_h) // 2
        sx, sy = width / resized[0], height / resized[1]
        return resized, (left * sx, top * sy, (left + out_w) * sx, (top + out_h) * sy)

    def prepare(self, image: Image.Image) -> torch.Tensor:
        """PIL image -> uint8 tensor (C, H, W) at the model's input size. Resize and centre crop are one resize of
        the crop's box: the pixels cut off are never computed (the same sampling as resizing, then cropping)."""
        image = image.convert("L" if self.channels == 1 else "RGB")
        height, width = self.input_size
        method = Image.Resampling.BICUBIC if self.interpolation == "bicubic" else Image.Resampling.BILINEAR
        if self.resize == "pad" and image.size != (width, height):
            image = pad_to(image, (width, height), method)
        elif image.size != (width, height):
            _, box = self.resize_plan(*image.size)
            image = image.resize((width, height), method, box=box, reducing_gap=3.0)
        array = np.asarray(image, dtype=np.uint8)
        if array.ndim == 2:
            array = array[:, :, None]
        return torch.from_numpy(array.copy()).permute(2, 0, 1)

    def normalize(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 or [0, 1] float batch (N, C, H, W) -> normalised float batch."""
        if batch.dtype == torch.uint8:
            batch = batch.float().div_(255)
        mean = torch.tensor(self.mean, device=batch.device, dtype=batch.dtype).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=batch.device, dtype=batch.dtype).view(1, -1, 1, 1)
        return (batch - mean) / std


def border_colour(image: Image.Image) -> tuple[int, ...]:
    """The median colour of the image's outermost pixels: a studio photo's white, a table's wood."""
    array = np.asarray(image)
    array = array[:, :, None] if array.ndim == 2 else array
    edges = np.concatenate([array[0], array[-1], array[:, 0], array[:, -1]])
    return tuple(int(v) for v in np.median(edges, axis=0))


def pad_to(image: Image.Image, size: tuple[int, int], method) -> Image.Image:
    """The whole image scaled to fit `size` (width, height), aspect kept, centred on its border colour."""
    width, height = size
    scale = min(width / image.width, height / image.height)
    inner = (max(1, min(width, round(image.width * scale))), max(1, min(height, round(image.height * scale))))
    fill = border_colour(image)
    resized = image.resize(inner, method, reducing_gap=3.0)
    canvas = Image.new(image.mode, (width, height), fill[0] if image.mode == "L" else fill)
    canvas.paste(resized, ((width - inner[0]) // 2, (height - inner[1]) // 2))
    return canvas


def normalize_numpy(batch: np.ndarray, preprocessing: Preprocessing) -> np.ndarray:
    """The same as Preprocessing.normalize for a uint8 numpy batch, without torch: on the onnxruntime path this
    keeps torch's worker threads from competing with onnxruntime's for the same cores."""
    channels = batch.shape[1]
    scale = (1.0 / (255.0 * np.asarray(preprocessing.std, np.float32))).reshape(1, channels, 1, 1)
    shift = (np.asarray(preprocessing.mean, np.float32) / np.asarray(preprocessing.std, np.float32))
    out = batch.astype(np.float32)
    out *= scale
    out -= shift.reshape(1, channels, 1, 1)
    return out


def softmax_numpy(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def array_mean_std(arrays: np.ndarray, channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images (N, H, W[, C]) scaled to [0, 1], from up to 10,000 images."""
    sample = arrays[:: max(1, len(arrays) // 10_000)].astype(np.float32) / 255
    if sample.ndim == 3:
        sample = sample[..., None]
    mean = sample.mean(axis=(0, 1, 2))
    std = sample.std(axis=(0, 1, 2))
    if channels == 1 and mean.size > 1:
        mean, std = mean.mean(keepdims=True), std.mean(keepdims=True)
    return tuple(round(float(v), 4) for v in mean), tuple(round(float(v), 4) for v in std)
