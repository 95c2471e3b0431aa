"""ANSI SGR parser: terminal output with colour escapes -> lines of styled spans.

Handles what real tools print: SGR (16, 256 and true colours, bold/dim/italic/underline/
inverse), carriage-return overwrites (progress bars), backspaces, and other CSI/OSC sequences
(cursor moves, titles), which are dropped.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Optional

# xterm's default 16-colour palette, as terminals such as VS Code / GNOME Terminal show it
# (Tango-like; xterm's own values are harsher). Index 0-7 normal, 8-15 bright.
PALETTE_16 = (
    "#2e3436", "#cc0000", "#4e9a06", "#c4a000", "#3465a4", "#75507b", "#06989a", "#d3d7cf",
    "#555753", "#ef2929", "#8ae234", "#fce94f", "#729fcf", "#ad7fa8", "#34e2e2", "#eeeeec",
)

# CSI ... final byte, OSC ... BEL/ST, and two-byte escapes.
_ESCAPE = re.compile(r"\x1b\[([0-9;:?<=>]*)([ -/]*[@-~])|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")


def color_256(n: int) -> str:
    """xterm 256-colour index -> hex (16 base, 6x6x6 cube, 24 greys)."""
    if n < 16:
        return PALETTE_16[n]
    if n < 232:
        n -= 16
        steps = (0, 95, 135, 175, 215, 255)
        return "#%02x%02x%02x" % (steps[n // 36], steps[(n // 6) % 6], steps[n % 6])
    grey = 8 + (n - 232) * 10
    return "#%02x%02x%02x" % (grey, grey, grey)


@dataclass(frozen=True)
class Style:
    fg: Optional[str] = None   # hex colour, None = the terminal's default
    bg: Optional[str] = None
    bold: bool = False
    dim: bool = False
    italic: bool = False
    underline: bool = False
    inverse: bool = False


@dataclass(frozen=True)
class Span:
    text: str
    style: Style = Style()


def _extended(params: list[int], i: int) -> tuple[Optional[str], int]:
    """Parse 38/48 ``;5;n`` or ``;2;r;g;b`` starting after the 38/48; return (colour, next index)."""
    if i < len(params) and params[i] == 5 and i + 1 < len(params):
        return color_256(params[i + 1] % 256), i + 2
    if i < len(params) and params[i] == 2 and i + 3 < len(params):
        r, g, b = (max(0, min(255, v)) for v in params[i + 1:i + 4])
        return "#%02x%02x%02x" % (r, g, b), i + 4
    return None, len(params)


def apply_sgr(style: Style, codes: str) -> Style:
    """The style after one ``ESC [ codes m``."""
    params = [int(p) if p.isdigit() else 0 for p in re.split("[;:]", codes)] if codes else [0]
    i = 0
    while i < len(params):
        p = params[i]
        i += 1
        if p == 0:
            style = Style()
        elif p == 1:
            style = replace(style, bold=True)
        elif p == 2:
            style = replace(style, dim=True)
        elif p == 3:
            style = replace(style, italic=True)
        elif p == 4:
            style = replace(style, underline=True)
        elif p == 7:
            style = replace(style, inverse=True)
        elif p == 22:
            style = replace(style, bold=False, dim=False)
        elif p == 23:
            style = replace(style, italic=False)
        elif p == 24:
            style = replace(style, underline=False)
        elif p == 27:
            style = replace(style, inverse=False)
        elif 30 <= p <= 37:
            style = replace(style, fg=PALETTE_16[p - 30])
        elif 90 <= p <= 97:
            style = replace(style, fg=PALETTE_16[p - 90 + 8])
        elif 40 <= p <= 47:
            style = replace(style, bg=PALETTE_16[p - 40])
        elif 100 <= p <= 107:
            style = replace(style, bg=PALETTE_16[p - 100 + 8])
        elif p == 39:
            style = replace(style, fg=None)
        elif p == 49:
            style = replace(style, bg=None)
        elif p in (38, 48):
            colour, i = _extended(params, i)
            if colour:
                style = replace(style, **{"fg" if p == 38 else "bg": colour})
    return style


def _overwrite(cells: list[tuple[str, Style]], col: int, ch: str, style: Style) -> None:
    if col < len(cells):
        cells[col] = (ch, style)
    else:
        cells.extend([(" ", Style())] * (col - len(cells)))
        cells.append((ch, style))


def _spans(cells: list[tuple[str, Style]]) -> list[Span]:
    out: list[Span] = []
    for ch, style in cells:
        if out and out[-1].style == style:
            out[-1] = Span(out[-1].text + ch, style)
        else:
            out.append(Span(ch, style))
    return out


def parse(text: str, tab: int = 8) -> list[list[Span]]:
    """Split ``text`` into lines of spans, as a terminal would show it."""
    lines: list[list[Span]] = []
    cells: list[tuple[str, Style]] = []
    col = 0
    style = Style()
    pos = 0
    text = text.replace("\r\n", "\n")
    while pos < len(text):
        m = _ESCAPE.match(text, pos) if text[pos] == "\x1b" else None
        if m:
            if m.group(2) == "m":
                style = apply_sgr(style, m.group(1))
            elif m.group(2) == "K" and m.group(1) in ("", "0"):  # erase to end of line
                del cells[col:]
            pos = m.end()
            continue
        ch = text[pos]
        pos += 1
        if ch == "\n":
            lines.append(_spans(cells))
            cells, col = [], 0
        elif ch == "\r":
            col = 0
        elif ch == "\b":
            col = max(0, col - 1)
        elif ch == "\t":
            col += tab - col % tab
        elif ch == "\x1b" or (ord(ch) < 32):
            continue  # a lone ESC or another control character: invisible
        else:
            _overwrite(cells, col, ch, style)
            col += 1
    if cells:
        lines.append(_spans(cells))
    return lines


def plain(lines: list[list[Span]]) -> str:
    """The text without styles (what a test or a search sees)."""
    return "\n".join("".join(s.text for s in line) for line in lines)
