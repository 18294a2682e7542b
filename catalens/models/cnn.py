"""The project's own CNNs for small images (Fashion-MNIST-sized, 28x28 and up)."""

from __future__ import annotations

from torch import nn

from catalens.models.registry import register_model


def conv_pool_bn_relu(in_channels: int, out_channels: int, pool: bool = True) -> list[nn.Module]:
    """3x3 conv, then (optionally) 2x2 max-pool, BatchNorm and ReLU. Pooling before BatchNorm and ReLU
    runs them on a 4x smaller map: a third faster to train on CPU at the same accuracy (BENCHMARKS.md)."""
    return [
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        *([nn.MaxPool2d(2)] if pool else []),
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
    """Four 3x3 conv stages at full, 1/2, 1/4 and 1/8 size (max-pool between them), then a global max-pool.
    The widest layers work on the smallest maps, so compute stays low, and the global pool makes any
    input size work."""
    a, b, c, d = widths
    return nn.Sequential(
        *conv_pool_bn_relu(in_chans, a),
        *conv_pool_bn_relu(a, b),
        *conv_pool_bn_relu(b, c),
        *conv_pool_bn_relu(c, d, pool=False),
        *(
            [nn.AdaptiveMaxPool2d(3), nn.Flatten(), nn.Linear(9 * d, dense), nn.ReLU(inplace=True),
             nn.Linear(dense, num_classes)]
            if dense else [nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(d, num_classes)]
        ),
    )


@register_model("fastcnn", "default for small grayscale images: 4 conv stages (24-48-96-192 channels) with "
                "max-pooling and a global max-pool head; about 5.7 M multiply-adds at 28x28")
def fastcnn(num_classes: int, in_chans: int = 1, input_size=(28, 28)) -> nn.Module:
    return four_stage_cnn(num_classes, in_chans, (24, 48, 96, 192))


@register_model("fastcnn_dense", "fastcnn with a dense head over the 3x3 map (keeps where features are); "
                "about 10 % slower to train, and no more accurate with the default recipe (BENCHMARKS.md)")
def fastcnn_dense(num_classes: int, in_chans: int = 1, input_size=(28, 28)) -> nn.Module:
    return four_stage_cnn(num_classes, in_chans, (24, 48, 96, 192), dense=256)


@register_model("photocnn", "for photos at 224 px, e.g. the zoomed-vs-normal filter: a 4x4 stride-4 stem, then "
                "fastcnn's four stages (32-64-128-256 channels); about 80 M multiply-adds, sorts 150+ images/s "
                "on 2 CPU cores", default_input_size=(224, 224))
def photocnn(num_classes: int, in_chans: int = 3, input_size=(224, 224)) -> nn.Module:
    stem = [nn.Conv2d(in_chans, 32, 4, stride=4, bias=False), nn.BatchNorm2d(32), nn.ReLU(inplace=True)]
    return nn.Sequential(*stem, *four_stage_cnn(num_classes, 32, (32, 64, 128, 256)))
