import pytest
import torch

from catalens import CatalensError
from catalens.loading.augment import PRESETS, get_preset, random_resized_crop
from catalens.models import create_model


@pytest.mark.parametrize("name", sorted(PRESETS))
@pytest.mark.parametrize("channels", [1, 3])
def test_presets_keep_shape_and_range(name, channels):
    torch.manual_seed(0)
    batch = torch.rand(16, channels, 28, 28)
    out = get_preset(name)(batch)
    assert out.shape == batch.shape and out.dtype == batch.dtype
    assert out.min() >= 0 and out.max() <= 1
    if name == "none":
        assert torch.equal(out, batch)
    else:
        assert not torch.equal(out, batch)


def test_shopee_flips_and_grays_about_half_the_images():
    torch.manual_seed(0)
    batch = torch.rand(400, 3, 8, 8)
    out = get_preset("shopee")(batch)
    gray = (out[:, 0] == out[:, 1]).flatten(1).all(1) & (out[:, 1] == out[:, 2]).flatten(1).all(1)
    assert 0.4 < gray.float().mean() < 0.6


def test_light_mirrors_about_half_the_images_and_changes_nothing_else():
    torch.manual_seed(0)
    batch = torch.rand(400, 1, 8, 8)
    out = get_preset("light")(batch)
    mirrored = (out == batch.flip(3)).flatten(1).all(1)
    assert ((out == batch).flatten(1).all(1) | mirrored).all()
    assert 0.4 < mirrored.float().mean() < 0.6


def test_random_resized_crop_zooms_in():
    batch = torch.zeros(8, 1, 32, 32)
    batch[:, :, :, 16:] = 1  # left half dark, right half bright
    torch.manual_seed(1)
    out = random_resized_crop(batch, scale=(0.1, 0.1))
    assert ((out.mean(dim=(1, 2, 3)) < 0.05) | (out.mean(dim=(1, 2, 3)) > 0.95)).any()  # some crops see one half


def test_unknown_preset_and_model_are_clear_errors():
    with pytest.raises(CatalensError, match="unknown augmentation preset"):
        get_preset("wild")
    with pytest.raises(CatalensError, match="unknown model"):
        create_model("resnet9000", 10)


@pytest.mark.parametrize("name,channels,size", [("cnn3", 1, 28), ("fastcnn", 1, 28), ("fastcnn", 3, 64),
                                                ("fastcnn_dense", 1, 28), ("timm:resnet18", 1, 32)])
def test_models_produce_logits_for_their_input(name, channels, size):
    model = create_model(name, 7, channels, (size, size)).eval()
    with torch.no_grad():
        assert model(torch.randn(2, channels, size, size)).shape == (2, 7)
