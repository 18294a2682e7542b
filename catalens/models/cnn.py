"""The project's own CNNs for small images (Fashion-MNIST-sized, 28x28 and up)."""

from __future__ import annotations

from torch import nn

from . import register_model


def conv_bn_relu(in_channels: int, out_channels: int) -> list[nn.Module]:
    return [
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]


@register_model("cnn3", "baseline of the field's write-ups: 3 conv + max-pool blocks, then dense layers")
def cnn3(num_classes: int, in_chans: int = 1, input_size=(28, 28)) -> nn.Module:
    height, width = input_size
    flat = 64 * (height // 8) * (width // 8)
    return nn.Sequential(
        nn.Conv2d(in_chans, 32, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(flat, 128), nn.ReLU(inplace=True), nn.Dropout(0.3), nn.Linear(128, num_classes),
    )


@register_model(
    "fastcnn",
    "default for small grayscale images: 4 conv-BN-ReLU blocks (32-64-128-256) with max-pooling, global max-pool head",
)
def fastcnn(num_classes: int, in_chans: int = 1, input_size=(28, 28)) -> nn.Module:
    """Built for CPU speed: the widest layers work on the smallest maps (7x7, 3x3), so a 28x28 image costs
    about 10 M multiply-adds, and the global pool makes it work at any input size."""
    return nn.Sequential(
        *conv_bn_relu(in_chans, 32), nn.MaxPool2d(2),
        *conv_bn_relu(32, 64), nn.MaxPool2d(2),
        *conv_bn_relu(64, 128), nn.MaxPool2d(2),
        *conv_bn_relu(128, 256),
        nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(256, num_classes),
    )
