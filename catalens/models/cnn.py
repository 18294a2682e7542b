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


def four_stage_cnn(num_classes: int, in_chans: int, widths: tuple[int, int, int, int], dense: int = 0) -> nn.Module:
    """Conv-BN-ReLU at full size, then three max-pool + conv-BN-ReLU stages (1/2, 1/4, 1/8 size), global max-pool.
    The widest layers work on the smallest maps, so compute stays low, and the global pool makes any
    input size work."""
    a, b, c, d = widths
    return nn.Sequential(
        *conv_bn_relu(in_chans, a), nn.MaxPool2d(2),
        *conv_bn_relu(a, b), nn.MaxPool2d(2),
        *conv_bn_relu(b, c), nn.MaxPool2d(2),
        *conv_bn_relu(c, d),
        *(
            [nn.AdaptiveMaxPool2d(3), nn.Flatten(), nn.Linear(9 * d, dense), nn.ReLU(inplace=True),
             nn.Linear(dense, num_classes)]
            if dense else [nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(d, num_classes)]
        ),
    )


@register_model("fastcnn", "default for small grayscale images: 4 conv-BN-ReLU stages (24-48-96-192) with "
                "max-pooling and a global max-pool head; about 5.7 M multiply-adds at 28x28")
def fastcnn(num_classes: int, in_chans: int = 1, input_size=(28, 28)) -> nn.Module:
    return four_stage_cnn(num_classes, in_chans, (24, 48, 96, 192))


@register_model("fastcnn_dense", "fastcnn with a dense head over the 3x3 map (keeps where features are): "
                "more accurate, about 25 % slower")
def fastcnn_dense(num_classes: int, in_chans: int = 1, input_size=(28, 28)) -> nn.Module:
    return four_stage_cnn(num_classes, in_chans, (24, 48, 96, 192), dense=256)
