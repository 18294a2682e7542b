"""Augmentation presets, applied to whole batches of [0, 1] float tensors (N, C, H, W) on the training
device, so in-memory data trains at array speed. Each preset is a small named class, like torchvision's
reference presets.

none      nothing
light     horizontal flip (p=0.5). The default: on Fashion-MNIST a random 2-pixel shift on top of it cost
          1.1 points of test accuracy at 8 epochs (BENCHMARKS.md); short schedules underfit, so augment little
shopee    random grayscale, horizontal flip, vertical flip (each p=0.5), as in the Shopee write-up
standard  random-resized-crop (scale 0.35-1, aspect 3/4-4/3), horizontal flip, colour jitter
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from catalens.errors import CatalensError


def random_mask(n: int, p: float, device) -> torch.Tensor:
    return (torch.rand(n, device=device) < p).view(n, 1, 1, 1)


def flip(batch: torch.Tensor, p: float, dim: int) -> torch.Tensor:
    return torch.where(random_mask(len(batch), p, batch.device), batch.flip(dim), batch)


def to_grayscale(batch: torch.Tensor, p: float) -> torch.Tensor:
    if batch.shape[1] != 3:
        return batch
    weights = torch.tensor([0.299, 0.587, 0.114], device=batch.device, dtype=batch.dtype).view(1, 3, 1, 1)
    gray = (batch * weights).sum(1, keepdim=True).expand_as(batch)
    return torch.where(random_mask(len(batch), p, batch.device), gray, batch)


def random_resized_crop(batch: torch.Tensor, scale=(0.35, 1.0), ratio=(3 / 4, 4 / 3)) -> torch.Tensor:
    """A random crop of each image (area fraction in `scale`, aspect in `ratio`) resized back, in one
    grid_sample call for the whole batch."""
    n = len(batch)
    device = batch.device
    area = torch.empty(n, device=device).uniform_(*scale)
    log_ratio = torch.empty(n, device=device).uniform_(math.log(ratio[0]), math.log(ratio[1]))
    aspect = torch.exp(log_ratio)
    width = torch.sqrt(area * aspect).clamp(max=1.0)
    height = torch.sqrt(area / aspect).clamp(max=1.0)
    center_x = (torch.rand(n, device=device) * 2 - 1) * (1 - width)
    center_y = (torch.rand(n, device=device) * 2 - 1) * (1 - height)
    theta = torch.zeros(n, 2, 3, device=device, dtype=batch.dtype)
    theta[:, 0, 0], theta[:, 0, 2] = width, center_x
    theta[:, 1, 1], theta[:, 1, 2] = height, center_y
    grid = F.affine_grid(theta, list(batch.shape), align_corners=False)
    return F.grid_sample(batch, grid, mode="bilinear", padding_mode="border", align_corners=False)


def color_jitter(batch: torch.Tensor, brightness=0.3, contrast=0.3, saturation=0.3) -> torch.Tensor:
    n = len(batch)
    device = batch.device

    def factors(amount):
        return torch.empty(n, 1, 1, 1, device=device).uniform_(1 - amount, 1 + amount)

    batch = batch * factors(brightness)
    mean = batch.mean(dim=(1, 2, 3), keepdim=True)
    batch = (batch - mean) * factors(contrast) + mean
    if batch.shape[1] == 3:
        gray = batch.mean(dim=1, keepdim=True)
        batch = (batch - gray) * factors(saturation) + gray
    return batch.clamp(0, 1)


class Preset:
    name = "none"
    description = "no augmentation"

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        return batch


class Light(Preset):
    name = "light"
    description = "horizontal flip"

    def __call__(self, batch):
        return flip(batch, 0.5, 3)


class Shopee(Preset):
    name = "shopee"
    description = "random grayscale, horizontal flip, vertical flip (each p=0.5)"

    def __call__(self, batch):
        return flip(flip(to_grayscale(batch, 0.5), 0.5, 3), 0.5, 2)


class Standard(Preset):
    name = "standard"
    description = "random-resized-crop, horizontal flip, colour jitter"

    def __call__(self, batch):
        return color_jitter(flip(random_resized_crop(batch), 0.5, 3))


PRESETS = {preset.name: preset for preset in (Preset, Light, Shopee, Standard)}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise CatalensError(f"unknown augmentation preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return PRESETS[name]()
