"""Input normalisation of `invoke predict` (Pillow + numpy, no torch): every awkward input
becomes the right RGB array or a one-line error."""
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dpdeploy.inenv import images
from dpdeploy.inference.inputs import collect, split_specs
from dpdeploy.inenv.outputs import unique_stems

from . import bad_inputs


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("inputs")
    return path, bad_inputs.make(path)


def test_every_case_is_a_result_or_a_one_line_error(folder):
    path, expect = folder
    for name, (status, *rest) in expect.items():
        if status == "ok":
            size, note = rest
            loaded = images.load_rgb(path / name)
            assert loaded.rgb.dtype == np.uint8 and loaded.rgb.ndim == 3 and loaded.rgb.shape[2] == 3, name
            assert loaded.size == size, name
            if note:
                assert any(note in n for n in loaded.notes), (name, loaded.notes)
        else:
            with pytest.raises(images.ImageError) as err:
                images.load_rgb(path / name)
            message = str(err.value)
            assert rest[0] in message and "\n" not in message, (name, message)


def test_pixels_are_converted_not_clipped(folder):
    path, _ = folder
    cmyk = images.load_rgb(path / "cmyk.jpg").rgb
    r, g, b = cmyk.reshape(-1, 3).mean(axis=0)
    assert r > 200 and g < 60 and b < 60, "CMYK (0,255,255,0) is red"
    deep = images.load_rgb(path / "deep16.png").rgb[:, :, 0]
    assert deep.max() > 200 and len(np.unique(deep)) > 100, "16-bit values scaled, not clipped at 255"
    rgba = images.load_rgb(path / "rgba.png").rgb
    assert rgba.min() >= 100, "alpha 100/255 over white lifts every channel"


def test_exif_rotation_moves_the_pixels(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6
    img = Image.new("RGB", (4, 2), (0, 0, 255))
    img.putpixel((0, 0), (255, 0, 0))   # top-left red
    img.save(tmp_path / "r.png", exif=exif)
    rgb = images.load_rgb(tmp_path / "r.png").rgb
    assert rgb.shape[:2] == (4, 2)
    assert tuple(rgb[0, 1]) == (255, 0, 0), "orientation 6: the top-left pixel moves to the top-right"


def test_huge_is_resized_to_max_size(tmp_path):
    Image.new("RGB", (3000, 1000), (10, 20, 30)).save(tmp_path / "wide.png")
    loaded = images.load_rgb(tmp_path / "wide.png", max_size=600)
    assert loaded.size == (600, 200) and loaded.original_size == (3000, 1000)
    assert "resized from 3000x1000 px to 600x200" in loaded.notes[-1]


def test_folder_is_an_error_and_png_roundtrips(tmp_path):
    with pytest.raises(images.ImageError, match="folder"):
        images.load_rgb(tmp_path)
    rgb = np.random.default_rng(0).integers(0, 255, (5, 7, 3), dtype=np.uint8)
    (tmp_path / "x.png").write_bytes(images.png_bytes(rgb))
    assert np.array_equal(images.load_rgb(tmp_path / "x.png").rgb, rgb)
    both = images.side_by_side(rgb, rgb[:3])
    assert both.shape == (5, 14, 3) and (both[3:, 7:] == 255).all()


def test_collect_walks_folders_recursively_and_says_what_it_skipped(tmp_path):
    (tmp_path / "b.jpg").write_bytes(b"x")
    (tmp_path / "a.PNG").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / ".hidden.jpg").write_bytes(b"x")
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    (tmp_path / "sub" / "b.jpg").write_bytes(b"x")
    (tmp_path / "sub" / "deeper" / "b.jpg").write_bytes(b"x")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "c.jpg").write_bytes(b"x")
    found = collect([str(tmp_path), "missing.jpg"])
    assert found.names == ["a.PNG", "b.jpg", "sub/b.jpg", "sub/deeper/b.jpg", "missing.jpg"]
    assert [p.split("/")[-1] for p in found.files] == ["a.PNG", "b.jpg", "b.jpg", "b.jpg", "missing.jpg"]
    assert sorted(line.split("/")[-1] for line in found.skipped) == \
        [".git: hidden folder", ".hidden.jpg: hidden file", "notes.txt: not an image file name (.txt)"]
    # the output tree mirrors the input tree: three b.jpg in three folders never collide
    assert unique_stems(found.names) == ["a", "b", "sub/b", "sub/deeper/b", "missing"]


def test_split_specs_keeps_existing_paths_with_commas(tmp_path):
    odd = tmp_path / "a,b.jpg"
    odd.write_bytes(b"x")
    assert split_specs([str(odd)]) == [str(odd)]
    assert split_specs(["x.jpg, y dir/,"]) == ["x.jpg", "y dir/"]


def test_unique_stems_are_safe_and_distinct():
    stems = unique_stems(["photo.jpg", "photo.png", "PHOTO.jpg", "фото ü.jpg", ".jpg", "a b&c.png"])
    assert stems == ["photo", "photo-2", "PHOTO-3", "u", "jpg", "a_b_c"]
    assert all(s.isascii() and "/" not in s for s in stems)


def test_mirrored_stems_are_safe_in_every_part():
    assert unique_stems(["Reise 2024/Tag ü/img.jpg", "../x.jpg"]) == ["Reise_2024/Tag_u/img", "x"]


def test_a_folder_gives_its_videos_and_frames_are_fitted_like_files(tmp_path):
    (tmp_path / "clip.MP4").write_bytes(b"x")
    (tmp_path / "a.jpg").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("x")
    found = collect([str(tmp_path)])
    assert [Path(f).name for f in found.files] == ["a.jpg", "clip.MP4"] and len(found.skipped) == 1
    frame = images.from_array(np.zeros((300, 600, 3), np.uint8), 200)
    assert frame.size == (200, 100) and frame.original_size == (600, 300) and frame.format == "video frame"
    assert frame.notes == ["resized from 600x300 px to 200x100 (longest side limited to 200 px)"]
    small = np.zeros((30, 60, 3), np.uint8)
    assert images.from_array(small, 200).rgb is small
