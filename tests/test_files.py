"""The one home of atomic writes and of "the output must not be inside the input" (catalens/files.py)."""

import pytest

from catalens.errors import CatalensError
from catalens.files import atomic_path, check_outside, write_atomic


def test_a_write_that_fails_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "metrics.json"
    write_atomic(path, "old")
    with pytest.raises(RuntimeError), atomic_path(path) as temporary:
        temporary.write_text("half of the ne")
        raise RuntimeError("killed")
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]
    write_atomic(path, b"new")
    assert path.read_bytes() == b"new" and sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_the_output_is_refused_inside_the_input_and_as_the_input(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    (tmp_path / "link").symlink_to(photos)
    for output in (photos, photos / "sorted", tmp_path / "link" / "sorted"):
        with pytest.raises(CatalensError, match="give a folder outside it"):
            check_outside(output, [tmp_path / "other", photos], "OUTPUT_DIR", "INPUT_DIR", "it would be read again")
    check_outside(tmp_path / "sorted", photos, "OUTPUT_DIR", "INPUT_DIR", "it would be read again")
    check_outside(tmp_path / "photos-sorted", photos, "OUTPUT_DIR", "INPUT_DIR", "it would be read again")
