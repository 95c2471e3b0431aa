"""The ANSI SGR parser on the escapes real tools print."""
from dpdeploy.report.ansi import PALETTE_16, Style, color_256, parse, plain


def test_colours_bold_and_reset():
    lines = parse("\x1b[1;31merror:\x1b[0m plain \x1b[32mok\x1b[39m after\n")
    assert len(lines) == 1
    spans = lines[0]
    assert spans[0].text == "error:" and spans[0].style == Style(fg=PALETTE_16[1], bold=True)
    assert spans[1].text == " plain " and spans[1].style == Style()
    assert spans[2].text == "ok" and spans[2].style.fg == PALETTE_16[2]
    assert spans[3].text == " after" and spans[3].style.fg is None


def test_256_and_truecolour_and_bright():
    [[a, b, c]] = parse("\x1b[38;5;196mA\x1b[38;2;1;2;3mB\x1b[94;48;5;232mC")
    assert a.style.fg == color_256(196) == "#ff0000"
    assert b.style.fg == "#010203"
    assert c.style.fg == PALETTE_16[12] and c.style.bg == "#080808"


def test_carriage_return_overwrites_like_a_progress_bar():
    assert plain(parse("progress 10%\rprogress 100%\n")) == "progress 100%"
    assert plain(parse("abcdef\rXY\n")) == "XYcdef"
    assert plain(parse("abcdef\rXY\x1b[K\n")) == "XY"


def test_other_escapes_are_dropped():
    text = "\x1b[?25l\x1b]0;title\x07hello\x1b[2A\x1b[?25h world\n"
    assert plain(parse(text)) == "hello world"


def test_dim_inverse_and_sgr_off_codes():
    [[a, b]] = parse("\x1b[2;7mX\x1b[22;27mY")
    assert a.style.dim and a.style.inverse
    assert not b.style.dim and not b.style.inverse


def test_tabs_and_blank_lines_keep_positions():
    assert parse("a\tb\n\nc") [1] == []
    assert plain(parse("a\tb")) == "a       b"
