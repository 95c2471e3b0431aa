"""A terminal screenshot from a captured ``terminal.log``: SVG (text stays text) and PNG.

Looks like a terminal window: title bar, dark background, monospace, the prompt line
``$ <command>``, the captured colours. Long captures show their tail (what a terminal
window would show last), with a line saying how many lines were left out.
"""
from __future__ import annotations

import glob
import importlib.util
import io
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Optional
from xml.sax.saxutils import escape

from dpdeploy.report.ansi import Span, Style, parse

BACKGROUND = "#1e1e1e"
FOREGROUND = "#d4d4d4"
TITLE_BAR = "#323233"
PROMPT = "#8ae234"
MUTED = "#8a8a8a"
DOTS = ("#ff5f57", "#febc2e", "#28c840")

# Where a monospace TTF is found, in order: Debian/Ubuntu fonts-dejavu-core, Fedora/Arch
# layouts, matplotlib's bundled copy (mpl-data), then any *Mono*.ttf under /usr/share/fonts.
FONT_CANDIDATES = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf",
    "/usr/share/fonts/dejavu-sans-mono-fonts/DejaVuSansMono.ttf",
    "/usr/share/fonts/TTF/DejaVuSansMono.ttf",
)


@dataclass(frozen=True)
class Screen:
    """What the window shows: title, prompt command, styled lines, and how many were cut."""

    title: str
    command: str
    lines: list[list[Span]]
    omitted: int
    columns: int


def find_font(bold: bool = False) -> Optional[Path]:
    """A monospace TTF on this machine (DejaVu Sans Mono preferred), or None."""
    name = "DejaVuSansMono-Bold.ttf" if bold else "DejaVuSansMono.ttf"
    paths = [Path(p).with_name(name) for p in FONT_CANDIDATES]
    spec = importlib.util.find_spec("matplotlib")
    if spec and spec.origin:
        paths.append(Path(spec.origin).parent / "mpl-data" / "fonts" / "ttf" / name)
    for path in paths:
        if path.is_file():
            return path
    pattern = "*Mono*Bold.ttf" if bold else "*Mono.ttf"
    found = sorted(glob.glob(f"/usr/share/fonts/**/{pattern}", recursive=True))
    return Path(found[0]) if found else None


def _wrap(line: list[Span], width: int) -> list[list[Span]]:
    """Hard-wrap a styled line at ``width`` columns, as a terminal does."""
    rows: list[list[Span]] = [[]]
    used = 0
    for span in line:
        text = span.text
        while text:
            room = width - used
            if room == 0:
                rows.append([])
                used, room = 0, width
            piece, text = text[:room], text[room:]
            rows[-1].append(Span(piece, span.style))
            used += len(piece)
    return rows


def screen(log_text: str, command: str, title: str = "terminal", max_lines: int = 46,
           columns: int = 100) -> Screen:
    """Parse the capture and keep what a window of ``columns`` x ``max_lines`` shows last.

    Only the first line of ``command`` is the prompt (command.txt may add the worker's line).
    """
    command = (command.splitlines() or [""])[0]
    rows = [r for line in parse(log_text) for r in _wrap(line, columns)]
    while rows and not "".join(s.text for s in rows[-1]).strip():
        rows.pop()
    keep = max_lines - -(-(len(command) + 2) // columns)  # the prompt takes its wrapped rows
    omitted = max(0, len(rows) - keep)
    if omitted:
        keep -= 1  # and the "lines left out" marker another
        omitted = len(rows) - keep
        rows = rows[-keep:]
    used = max([sum(len(s.text) for s in r) for r in rows] + [len(command) + 2, 40])
    return Screen(title, command, rows, omitted, min(columns, used))


def _colours(style: Style) -> tuple[str, Optional[str]]:
    fg, bg = style.fg or FOREGROUND, style.bg
    if style.inverse:
        fg, bg = bg or BACKGROUND, fg
    return fg, bg


def _lines_for_drawing(s: Screen) -> list[list[Span]]:
    prompt = [Span("$ ", Style(fg=PROMPT, bold=True)), Span(s.command, Style(bold=True))]
    marker = [[Span(f"… {s.omitted} earlier lines in terminal.log …", Style(fg=MUTED, italic=True))]] if s.omitted else []
    return [*_wrap(prompt, s.columns), *marker, *s.lines]


# --- SVG ---------------------------------------------------------------------------------

def to_svg(s: Screen, font_size: int = 13) -> str:
    char_w, line_h, pad, bar = font_size * 0.6, font_size * 1.35, 14, 30
    lines = _lines_for_drawing(s)
    width = round(s.columns * char_w + 2 * pad)
    height = round(bar + pad + len(lines) * line_h + pad)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'font-family="DejaVu Sans Mono, Menlo, Consolas, monospace" font-size="{font_size}">',
        f'<rect width="{width}" height="{height}" rx="8" fill="{BACKGROUND}"/>',
        f'<path d="M0 8 a8 8 0 0 1 8 -8 h{width - 16} a8 8 0 0 1 8 8 v{bar - 8} h-{width} z" fill="{TITLE_BAR}"/>',
    ]
    out += [f'<circle cx="{18 + 20 * i}" cy="{bar / 2}" r="6" fill="{c}"/>' for i, c in enumerate(DOTS)]
    out.append(f'<text x="{width / 2}" y="{bar / 2 + 4}" fill="{MUTED}" text-anchor="middle" '
               f'font-family="DejaVu Sans, sans-serif" font-size="12">{escape(s.title)}</text>')
    for row, line in enumerate(lines):
        y = bar + pad + row * line_h + font_size
        col = 0
        tspans = []
        for span in line:
            fg, bg = _colours(span.style)
            x = pad + col * char_w
            if bg:
                out.append(f'<rect x="{x:.1f}" y="{y - font_size:.1f}" width="{len(span.text) * char_w:.1f}" '
                           f'height="{line_h:.1f}" fill="{bg}"/>')
            attrs = [f'x="{x:.1f}"', f'fill="{fg}"']
            if span.style.bold:
                attrs.append('font-weight="bold"')
            if span.style.italic:
                attrs.append('font-style="italic"')
            if span.style.dim:
                attrs.append('fill-opacity="0.6"')
            if span.style.underline:
                attrs.append('text-decoration="underline"')
            tspans.append(f'<tspan {" ".join(attrs)}>{escape(span.text)}</tspan>')
            col += len(span.text)
        if tspans:
            out.append(f'<text y="{y:.1f}" xml:space="preserve">{"".join(tspans)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


# --- PNG ---------------------------------------------------------------------------------

def to_png(s: Screen, font_size: int = 13, scale: int = 2) -> bytes:
    """The same picture as PNG, drawn with Pillow and a monospace TTF (``scale``x for sharpness)."""
    from PIL import Image, ImageDraw, ImageFont

    size = font_size * scale
    regular, bold = find_font(), find_font(bold=True)
    font = ImageFont.truetype(str(regular), size) if regular else ImageFont.load_default(size)
    font_bold = ImageFont.truetype(str(bold), size) if bold else font
    char_w = font.getlength("M")
    line_h, pad, bar = round(size * 1.35), 14 * scale, 30 * scale
    lines = _lines_for_drawing(s)
    width = round(s.columns * char_w + 2 * pad)
    height = round(bar + pad + len(lines) * line_h + pad)
    img = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(img)
    draw.rectangle((0, 0, width, bar), fill=TITLE_BAR)
    for i, colour in enumerate(DOTS):
        cx, cy, r = (18 + 20 * i) * scale, bar // 2, 6 * scale
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
    small = ImageFont.truetype(str(regular), 12 * scale) if regular else font
    draw.text((width / 2, bar / 2), s.title, fill=MUTED, font=small, anchor="mm")
    for row, line in enumerate(lines):
        y = bar + pad + row * line_h
        col = 0
        for span in line:
            fg, bg = _colours(span.style)
            x = pad + col * char_w
            if bg:
                draw.rectangle((x, y, x + len(span.text) * char_w, y + line_h), fill=bg)
            draw.text((x, y), span.text, fill=fg, font=font_bold if span.style.bold else font)
            if span.style.underline:
                draw.line((x, y + size + 2, x + len(span.text) * char_w, y + size + 2), fill=fg, width=scale)
            col += len(span.text)
    buf = io.BytesIO()
    img.save(buf, "PNG", optimize=True)
    return buf.getvalue()


def title_for(run_id: str, command: str) -> str:
    return textwrap.shorten(f"{run_id} — {command}", 90, placeholder="…")
