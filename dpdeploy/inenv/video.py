"""Video in and out for the predict worker, with PyAV (in the env): frames decoded in order, every
Nth kept; the overlay video written at the source's frame rate (/ N), atomically on close.

A video that cannot be opened, breaks off, or ends before the frame count its header promises
yields the frames that decoded, then ``Decoded.error`` says what happened to the rest.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import numpy as np


@dataclass
class Decoded:
    fps: Fraction = Fraction(0)   # of the source
    frames: int = 0               # as the header says (0: unknown)
    read: int = 0                 # decoded
    error: str = ""


def frames(path: str | Path, every: int, info: Decoded) -> Iterator[tuple[int, np.ndarray]]:
    """(frame number, RGB array) for every ``every``-th frame; ``info`` is filled in as it goes."""
    import av

    try:
        container = av.open(str(path))
    except Exception as exc:   # av.FFmpegError and friends: not a video, missing, no permission
        info.error = f"cannot open the video: {_one_line(exc)}"
        return
    with container:
        if not container.streams.video:
            info.error = "no video stream in the file"
            return
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        info.fps, info.frames = Fraction(stream.average_rate or stream.guessed_rate or 25), stream.frames
        try:
            for number, frame in enumerate(container.decode(stream)):
                info.read = number + 1
                if number % every == 0:
                    yield number, frame.to_ndarray(format="rgb24")
        except Exception as exc:
            info.error = f"truncated or corrupt video after frame {info.read}: {_one_line(exc)}"
            return
    if info.frames and info.read < info.frames:
        info.error = f"the video ends after {info.read} of the {info.frames} frames its header lists (truncated?)"
    elif info.read == 0:
        info.error = "no frame could be decoded"


class OverlayWriter:
    """H.264 (MPEG-4 part 2 where the env's FFmpeg has no H.264 encoder), yuv420p, frames in
    the order given; written to a temp file beside ``path`` and renamed on ``close``."""

    def __init__(self, path: Path, fps: Fraction):
        self.path, self.fps = path, fps
        self.container = self.stream = None
        self.tmp = ""

    def add(self, rgb: np.ndarray) -> None:
        import av

        h, w = rgb.shape[0] // 2 * 2, rgb.shape[1] // 2 * 2   # yuv420p wants even sides
        if self.container is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, self.tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=self.path.suffix, dir=self.path.parent)
            os.close(fd)
            self.container = av.open(self.tmp, "w")
            codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
            self.stream = self.container.add_stream(codec, rate=self.fps)
            self.stream.width, self.stream.height, self.stream.pix_fmt = w, h, "yuv420p"
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb[:h, :w]), format="rgb24")
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def close(self) -> bool:
        """Finish the file; False when no frame was added (nothing is written)."""
        if self.container is None:
            return False
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()
        os.chmod(self.tmp, 0o644)
        os.replace(self.tmp, self.path)
        return True


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
