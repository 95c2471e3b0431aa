"""The deployment report: run records -> model (pure) -> Markdown, HTML, PDF, zip bundle.

``write`` is the one entry point; the ``report`` task and the ``report`` setup step call it.
"""
from __future__ import annotations

import base64
import io
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from dpdeploy.fsutil import atomic_write_bytes
from dpdeploy.report import html, markdown, model, pdf, runs as records, screenshot

FORMATS = ("md", "html", "pdf")
MAX_IMAGE_PX = 1100     # long side of the copies embedded in the document (A4 at ~150 dpi)


class ReportError(ValueError):
    """Bad report input (unknown format, run not found): what, why, next step."""


@dataclass
class ReportResult:
    out: Path
    status: str
    headline: str
    files: list[Path] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    runs: list[tuple[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"out": str(self.out), "status": self.status, "headline": self.headline,
                "files": [str(f) for f in self.files], "seconds": self.seconds,
                "problems": self.problems, "runs": [list(r) for r in self.runs]}


def parse_formats(text: str) -> tuple[str, ...]:
    wanted = tuple(f.strip().lower() for f in text.split(",") if f.strip())
    unknown = [f for f in wanted if f not in FORMATS]
    if unknown:
        raise ReportError(f"unknown report format(s): {', '.join(unknown)} (choose from {', '.join(FORMATS)})")
    # Markdown and HTML are always written: the PDF is made from the HTML.
    return tuple(f for f in FORMATS if f in wanted or f in ("md", "html"))


def _image_copy(path: Path) -> tuple[str, bytes]:
    """A document-sized copy: JPEG for photos (small), PNG kept when already small."""
    from PIL import Image

    with Image.open(path) as img:
        img = img.convert("RGB")
        img.thumbnail((MAX_IMAGE_PX, MAX_IMAGE_PX))
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=88, optimize=True)
    data = buf.getvalue()
    raw = path.read_bytes()
    return (".png", raw) if len(raw) <= len(data) else (".jpg", data)


def _data_uri(name: str, data: bytes) -> str:
    mime = "image/png" if name.endswith(".png") else "image/jpeg" if name.endswith(".jpg") else "image/svg+xml"
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def write(setup_run: Optional[Path], predict_run: Optional[Path], out: Path, formats: tuple[str, ...] = FORMATS,
          photos: tuple[str, ...] = (), command: str = "invoke report", now: Optional[float] = None,
          notes: tuple[str, ...] = ()) -> ReportResult:
    """Build the document from the runs and write it under ``out`` (every file atomically)."""
    setup = records.load(setup_run) if setup_run else None
    predict = records.load(predict_run, photos) if predict_run else None
    generated = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(now))
    doc = model.build(setup, predict, generated, command, notes)
    result = ReportResult(out, doc.status, doc.headline, runs=doc.runs)
    files: dict[str, bytes] = {}

    started = time.monotonic()
    names: dict[Path, str] = {}
    for ph in doc.photos:
        for vis, _, path in ph.figures:
            ext, data = _image_copy(path)
            names[path] = f"images/{ph.name}-{vis}{ext}"
            files[names[path]] = data
    terminal_name = None
    if doc.terminal_log is not None:
        shot = screenshot.screen(doc.terminal_log, doc.terminal_command or "",
                                 screenshot.title_for(doc.terminal_run or "", doc.terminal_command or ""))
        files["terminal.svg"] = screenshot.to_svg(shot).encode("utf-8")
        files["terminal.png"] = screenshot.to_png(shot)
        terminal_name = "terminal.png"
    result.seconds["images"] = round(time.monotonic() - started, 3)

    started = time.monotonic()
    files["report.md"] = markdown.render(doc, lambda p: names[p], terminal_name).encode("utf-8")
    page = html.render(doc, lambda p: _data_uri(names[p], files[names[p]]),
                       _data_uri(terminal_name, files[terminal_name]) if terminal_name else None)
    files["report.html"] = page.encode("utf-8")
    result.seconds["md+html"] = round(time.monotonic() - started, 3)
    if "pdf" in formats:
        started = time.monotonic()
        try:
            files["report.pdf"] = pdf.render(page)
        except pdf.PdfUnavailable as err:
            result.problems.append(str(err))
        result.seconds["pdf"] = round(time.monotonic() - started, 3)

    for name, data in files.items():
        result.files.append(atomic_write_bytes(out / name, data))
    if "report.pdf" in files:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            for name in sorted(files):
                if name == "report.pdf" or name.startswith(("images/", "terminal.")):
                    z.writestr(f"densepose-report/{name}", files[name])
        result.files.append(atomic_write_bytes(out / "report.zip", buf.getvalue()))
    return result
