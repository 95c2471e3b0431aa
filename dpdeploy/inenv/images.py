"""Any input file -> the RGB array the model sees, or a one-line reason why not.

Pillow and numpy only (no torch), so it is tested in CI. Every odd input is handled here, in
one place: empty, missing, not an image, truncated, animated (first frame), grayscale,
palette, alpha, 16-bit, CMYK, EXIF-rotated, huge (resized, with a note).
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from dpdeploy.inenv.outputs import DEFAULT_MAX_SIZE

EXIF_ORIENTATION = 0x0112   # EXIF tag 274


class ImageError(Exception):
    """An input that cannot become an image; the message is one line, without the path."""


@dataclass
class Loaded:
    rgb: np.ndarray                 # H x W x 3, uint8
    original_size: tuple[int, int]  # (width, height) as decoded, before rotation or resize
    format: str
    notes: list[str] = field(default_factory=list)

    @property
    def size(self) -> tuple[int, int]:
        return self.rgb.shape[1], self.rgb.shape[0]


def load_rgb(path: str | Path, max_size: int = DEFAULT_MAX_SIZE) -> Loaded:
    """Decode ``path`` to RGB; raise ImageError with a one-line reason."""
    path = Path(path)
    try:
        if path.is_dir():
            raise ImageError("is a folder, not an image file")
        if path.stat().st_size == 0:
            raise ImageError("empty file (0 bytes)")
        with Image.open(path) as img:
            return _decode(img, max_size)
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError("no such file") from None
    except PermissionError:
        raise ImageError("permission denied") from None
    except UnidentifiedImageError:
        raise ImageError("not an image (Pillow cannot identify the file format)") from None
    except Image.DecompressionBombError as exc:
        raise ImageError(f"too many pixels to decode safely: {exc}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(f"truncated or corrupt image: {_one_line(exc)}") from None


def load_bytes(data: bytes, max_size: int = DEFAULT_MAX_SIZE) -> Loaded:
    """Decode an image held in memory (a request body) like ``load_rgb`` does a file."""
    if not data:
        raise ImageError("empty body (0 bytes)")
    try:
        with Image.open(io.BytesIO(data)) as img:
            return _decode(img, max_size)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError("not an image (Pillow cannot identify the file format)") from None
    except Image.DecompressionBombError as exc:
        raise ImageError(f"too many pixels to decode safely: {exc}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(f"truncated or corrupt image: {_one_line(exc)}") from None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _decode(img: Image.Image, max_size: int) -> Loaded:
    notes: list[str] = []
    fmt = img.format or "unknown"
    frames = getattr(img, "n_frames", 1)
    if frames > 1:
        img.seek(0)
        notes.append(f"{fmt} with {frames} frames: used the first")
    original = img.size
    if fmt == "JPEG" and max(img.size) > 2 * max_size:
        img.draft(img.mode, (max_size, max_size))   # decode at a reduced scale (fast, >= max_size)
    img.load()
    orientation = img.getexif().get(EXIF_ORIENTATION, 1)
    if orientation in range(2, 9):
        img = ImageOps.exif_transpose(img)
        notes.append(f"rotated by EXIF orientation {orientation}")
    rgb = _fit(_to_rgb(img, notes), original, max_size, notes)
    return Loaded(np.array(rgb, dtype=np.uint8), original, fmt, notes)


def from_array(rgb: np.ndarray, max_size: int, fmt: str = "video frame") -> Loaded:
    """An RGB array already decoded (a video frame), resized like a file would be."""
    notes: list[str] = []
    original = (rgb.shape[1], rgb.shape[0])
    if max(original) <= max_size:
        return Loaded(rgb, original, fmt, notes)
    fitted = _fit(Image.fromarray(rgb, "RGB"), original, max_size, notes)
    return Loaded(np.array(fitted, dtype=np.uint8), original, fmt, notes)


def _fit(rgb: Image.Image, original: tuple[int, int], max_size: int, notes: list[str]) -> Image.Image:
    if max(rgb.size) <= max_size:
        return rgb
    before = rgb.size
    scale = max_size / max(before)
    rgb = rgb.resize((max(1, round(before[0] * scale)), max(1, round(before[1] * scale))), Image.LANCZOS)
    notes.append(f"resized from {original[0]}x{original[1]} px to {rgb.size[0]}x{rgb.size[1]} "
                 f"(longest side limited to {max_size} px)")
    return rgb


def _to_rgb(img: Image.Image, notes: list[str]) -> Image.Image:
    mode = img.mode
    if mode == "RGB":
        return img
    if mode.startswith("I") or mode == "F":
        return _deep_to_rgb(img, notes)
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in img.info)
    if has_alpha:
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        background.alpha_composite(img.convert("RGBA"))
        notes.append(f"{mode} image: transparency flattened onto white")
        return background.convert("RGB")
    if mode in ("L", "1"):
        notes.append("grayscale image: replicated to RGB")
    elif mode != "P":
        notes.append(f"{mode} image converted to RGB")
    return img.convert("RGB")


def _deep_to_rgb(img: Image.Image, notes: list[str]) -> Image.Image:
    """16-bit / 32-bit integer or float grayscale: scale to 8 bits (Pillow's own convert clips)."""
    values = np.asarray(img, dtype=np.float64)
    if img.mode == "F":
        low, high = float(values.min()), float(values.max())
        scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
        notes.append("float image: stretched to 8 bits")
    else:
        top = 65535.0 if values.max() <= 65535 else float(values.max())
        scaled = values * (255.0 / top)
        notes.append(f"{'16' if top == 65535.0 else '32'}-bit grayscale: scaled to 8 bits")
    gray = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    return Image.fromarray(np.repeat(gray[:, :, None], 3, axis=2), "RGB")


def png_bytes(rgb: np.ndarray) -> bytes:
    """Encode an H x W x 3 uint8 array as PNG (moderate compression: outputs are written per image)."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8), "RGB").save(buf, "PNG", compress_level=3)
    return buf.getvalue()


def side_by_side(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Two RGB images next to each other, the shorter one padded with white at the bottom."""
    height = max(left.shape[0], right.shape[0])

    def pad(a: np.ndarray) -> np.ndarray:
        return np.pad(a, ((0, height - a.shape[0]), (0, 0), (0, 0)), constant_values=255)

    return np.concatenate([pad(left), pad(right)], axis=1)
