import io

import numpy as np
import pytest
from conftest import jpeg_bytes, pattern
from PIL import Image

from catalens.data.images import check_image, load_image


def save(image: Image.Image, path, **kwargs):
    image.save(path, **kwargs)
    return path


@pytest.mark.parametrize("extension,mode", [
    ("png", "RGB"), ("png", "L"), ("png", "P"), ("png", "RGBA"), ("png", "LA"), ("png", "I;16"),
    ("jpg", "CMYK"), ("jpg", "L"), ("webp", "RGB"), ("bmp", "RGB"), ("tiff", "RGB"), ("tiff", "I;16"),
    ("gif", "P"),
])
def test_every_common_format_and_mode_decodes_to_rgb(tmp_path, extension, mode):
    base = Image.fromarray(pattern("blob", 32))
    if mode == "I;16":
        image = Image.fromarray(np.asarray(base.convert("L"), dtype=np.uint16) * 257)
        assert image.mode.startswith("I")
    else:
        image = base.convert(mode)
    path = save(image, tmp_path / f"x.{extension}")
    decoded = load_image(path)
    assert decoded.mode == "RGB" and decoded.size == (32, 32)
    if mode == "I;16":  # 16-bit is scaled to 8-bit, not clipped to white
        assert 0 < np.asarray(decoded).mean() < 250


def test_alpha_is_composited_on_white(tmp_path):
    transparent = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    decoded = load_image(save(transparent, tmp_path / "t.png"))
    assert np.asarray(decoded)[0, 0].tolist() == [255, 255, 255]


def test_gif_first_frame(tmp_path):
    frames = [Image.new("P", (10, 10), color) for color in (1, 2)]
    frames[0].putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * 759)
    frames[1].putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * 759)
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    assert np.asarray(load_image(path))[0, 0].tolist() == [255, 0, 0]


def test_exif_orientation_is_applied(tmp_path):
    image = Image.fromarray(pattern("blob", 20)).resize((40, 20))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif.tobytes())
    assert load_image(path).size == (20, 40)


def test_bad_files_are_reported_with_a_reason(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("hello")
    (tmp_path / "cut.jpg").write_bytes(jpeg_bytes(pattern("blob", 64))[:300])
    (tmp_path / "good.jpg").write_bytes(jpeg_bytes(pattern("blob", 64)))
    assert check_image(tmp_path / "empty.jpg") == "zero-byte file"
    assert "not an image" in check_image(tmp_path / "text.jpg")
    assert "truncated" in check_image(tmp_path / "cut.jpg")
    assert check_image(tmp_path / "good.jpg") is None
    with pytest.raises(OSError):
        load_image(io.BytesIO(b"not an image"))


def test_squash_resize_keeps_the_whole_photo():
    from catalens.loading.preprocess import Preprocessing

    portrait = np.zeros((200, 100, 3), np.uint8)
    portrait[:20] = 255  # a white band at the top that a centre crop cuts off
    image = Image.fromarray(portrait)
    crop = Preprocessing(input_size=(50, 50), channels=3, mean=(0.5,) * 3, std=(0.5,) * 3).prepare(image)
    squash = Preprocessing(input_size=(50, 50), channels=3, mean=(0.5,) * 3, std=(0.5,) * 3,
                           resize="squash").prepare(image)
    assert crop.shape == squash.shape == (3, 50, 50)
    assert crop[:, 0].float().mean() < 10 and squash[:, 0].float().mean() > 245


def test_pad_resize_keeps_the_whole_narrow_photo_and_round_trips(tmp_path, small_model_dir):
    """--resize pad: a 0.4-wide portrait with a red mark at its top and a blue one at its bottom; the centre crop
    loses both, pad keeps both (unstretched), on the photo's own border colour."""
    from catalens.loading.preprocess import Preprocessing

    portrait = np.full((250, 100, 3), 240, np.uint8)
    portrait[:15, 30:70] = (220, 20, 20)
    portrait[-15:, 30:70] = (20, 20, 220)
    image = Image.fromarray(portrait)
    settings = dict(input_size=(100, 100), channels=3, mean=(0.5,) * 3, std=(0.5,) * 3)
    crop = Preprocessing(**settings).prepare(image).numpy()
    pad = Preprocessing(**settings, resize="pad").prepare(image).numpy()

    def marks(array):
        red = (array[0] > 150) & (array[2] < 80)
        blue = (array[2] > 150) & (array[0] < 80)
        return red, blue

    red, blue = marks(crop)
    assert not red.any() and not blue.any()
    red, blue = marks(pad)
    assert red[:8].sum() > 50 and blue[-8:].sum() > 50  # both ends, at the top and bottom rows
    assert (pad[:, :, :25] >= 235).all() and (pad[:, :, -25:] >= 235).all()  # padded with the border colour
    assert red.sum() == pytest.approx(blue.sum(), rel=0.1) and red.any(axis=0).sum() == pytest.approx(16, abs=2)
    card = Preprocessing.from_dict(Preprocessing(**settings, resize="pad").to_dict())
    assert card.resize == "pad" and card.resize_plan(100, 250)[0] == (40, 100)  # the serve draft covers the fit

    # a run trained with --resize pad: the card, the exported file and the server all use it
    from fastapi.testclient import TestClient

    import catalens
    from catalens.apps.serve import ServeOptions, create_app
    from catalens.rundir.run import Model, export_model

    data = small_model_dir.parent / "shop"
    run = catalens.train(data=str(data), model="cnn3", out=str(tmp_path / "pad"), epochs=1, input_size=32,
                         batch_size=16, augment="none", workers=0, resize="pad").run_dir
    assert Model.load(run).preprocessing.resize == "pad"
    export_model(run, tmp_path / "pad.onnx")
    exported = Model.load(tmp_path / "pad.onnx")
    assert exported.preprocessing.resize == "pad"
    photo = io.BytesIO()
    image.save(photo, format="JPEG", quality=95)
    expected = exported.predict([Image.open(io.BytesIO(photo.getvalue()))], k=2)[0]
    with TestClient(create_app(tmp_path / "pad.onnx", ServeOptions(db=f"sqlite:///{tmp_path / 'h.db'}"))) as client:
        answer = client.post("/v1/predict?k=2", files={"file": ("tall.jpg", photo.getvalue(), "image/jpeg")}).json()
    assert [p["label"] for p in answer["predictions"]] == [label for label, _ in expected]
    assert answer["predictions"][0]["probability"] == pytest.approx(expected[0][1], abs=1e-3)
