"""A folder of awkward inputs, generated with Pillow: what `invoke predict` must survive.

make(folder) -> {file name: expected}, expected = ("ok", (width, height) the model sees, note
fragment or "") or ("error", message fragment).
"""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image


def _photo(w: int, h: int, mode: str = "RGB") -> Image.Image:
    """A smooth colour gradient (deterministic), converted to ``mode``."""
    rgb = np.empty((h, w, 3), np.uint8)
    rgb[:, :, 0] = np.linspace(0, 255, w, dtype=np.uint8)[None, :]
    rgb[:, :, 1] = np.linspace(0, 255, h, dtype=np.uint8)[:, None]
    rgb[:, :, 2] = 128
    return Image.fromarray(rgb, "RGB").convert(mode)


def make(folder: Path, huge: bool = True) -> dict[str, tuple]:
    folder.mkdir(parents=True, exist_ok=True)
    expect: dict[str, tuple] = {}

    def ok(name: str, size: tuple[int, int], note: str = "") -> None:
        expect[name] = ("ok", size, note)

    _photo(64, 48).save(folder / "photo with spaces.jpg")
    ok("photo with spaces.jpg", (64, 48))
    _photo(40, 30).save(folder / "фото ünïcødé.png")
    ok("фото ünïcødé.png", (40, 30))
    _photo(32, 32, "L").save(folder / "gray.png")
    ok("gray.png", (32, 32), "grayscale")
    rgba = _photo(32, 32, "RGBA")
    rgba.putalpha(Image.new("L", (32, 32), 100))
    rgba.save(folder / "rgba.png")
    ok("rgba.png", (32, 32), "transparency flattened")
    deep = (np.arange(32 * 32, dtype=np.uint16).reshape(32, 32) * 64).astype(np.uint16)
    Image.fromarray(deep).save(folder / "deep16.png")   # mode I;16
    ok("deep16.png", (32, 32), "16-bit")
    Image.new("CMYK", (30, 20), (0, 255, 255, 0)).save(folder / "cmyk.jpg", quality=95)   # pure red
    ok("cmyk.jpg", (30, 20), "CMYK")
    exif = Image.Exif()
    exif[0x0112] = 6   # rotate 90 degrees clockwise to display
    _photo(60, 20).save(folder / "exif-rotated.jpg", exif=exif)
    ok("exif-rotated.jpg", (20, 60), "EXIF orientation 6")
    frames = [_photo(24, 16).rotate(a) for a in (0, 90, 180)]
    frames[0].save(folder / "animated.gif", save_all=True, append_images=frames[1:])
    ok("animated.gif", (24, 16), "first")
    _photo(50, 40).save(folder / "photo.webp")
    ok("photo.webp", (50, 40))
    _photo(10, 10).save(folder / "tiny.png")
    ok("tiny.png", (10, 10))
    if huge:
        _photo(8000, 6000).save(folder / "huge.jpg", quality=70)
        ok("huge.jpg", (2048, 1536), "resized from 8000x6000")

    (folder / "empty.jpg").write_bytes(b"")
    expect["empty.jpg"] = ("error", "empty file")
    (folder / "not-an-image.jpg").write_text("these are words, not pixels\n")
    expect["not-an-image.jpg"] = ("error", "not an image")
    buf = io.BytesIO()
    _photo(200, 150).save(buf, "JPEG")
    (folder / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    expect["truncated.jpg"] = ("error", "truncated")
    os.symlink(folder / "gone.jpg", folder / "dangling.png")
    expect["dangling.png"] = ("error", "no such file")
    return expect
