"""The document as one self-contained HTML page (images as data URIs); also the PDF's source."""
from __future__ import annotations

from html import escape
from typing import Callable, Optional

from dpdeploy.report.model import Document

CSS = """
@page { size: A4; margin: 14mm 13mm 16mm 13mm;
        @bottom-center { content: "DensePose deployment report — page " counter(page) " of " counter(pages);
                         font-size: 8pt; color: #777; } }
body { font-family: "DejaVu Sans", Helvetica, Arial, sans-serif; font-size: 9.5pt; color: #1d1d1f;
       max-width: 60em; margin: 1.5em auto; line-height: 1.4; }
h1 { font-size: 19pt; margin: 0 0 .2em; }
h2 { font-size: 13.5pt; border-bottom: 2px solid #e1e4e8; padding-bottom: .15em; margin-top: 1.4em; }
h3 { font-size: 11pt; margin: 1em 0 .4em; }
code, pre { font-family: "DejaVu Sans Mono", Menlo, monospace; font-size: 8.3pt; }
code { background: #f3f4f6; padding: .05em .3em; border-radius: 3px; word-break: break-all; }
pre { background: #f6f8fa; border: 1px solid #e1e4e8; padding: .6em; white-space: pre-wrap; word-break: break-all; }
.meta { color: #666; margin: 0 0 .8em; }
.banner { padding: .6em .9em; border-radius: 6px; font-weight: bold; font-size: 11pt; margin: .6em 0; }
.OK { background: #e6f4ea; color: #1e6b34; border: 1px solid #9bd3ae; }
.FAILED { background: #fdecea; color: #a11b12; border: 1px solid #f2a19a; }
.INCOMPLETE { background: #fff6e0; color: #7a5200; border: 1px solid #f0cf7a; }
.note { background: #fff6e0; border-left: 4px solid #f0b400; padding: .4em .7em; margin: .4em 0; }
ol.proc { padding-left: 1.6em; } ol.proc li { margin-bottom: .45em; } ol.sub { padding-left: 1.4em; }
.status { font-size: 8pt; font-weight: bold; padding: .05em .4em; border-radius: 3px; }
.s-done, .s-ok, .s-passed, .s-up-to-date { background: #e6f4ea; color: #1e6b34; }
.s-failed, .s-error { background: #fdecea; color: #a11b12; }
.s-skipped, .s-planned, .s-not.run { background: #eee; color: #555; }
.what { color: #444; }
table { border-collapse: collapse; width: 100%; margin: .4em 0; }
td, th { border: 1px solid #e1e4e8; padding: .25em .5em; text-align: left; vertical-align: top; }
th { background: #f6f8fa; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.photo h3 { break-after: avoid; } figure, tr { break-inside: avoid; }
.grid { font-size: 0; orphans: 1; widows: 1; }   /* no gaps from whitespace between the inline figures */
figure { display: inline-block; vertical-align: top; width: 32.6%; margin: 0 1% 6px 0; font-size: 9.5pt; }
figure:nth-child(3n) { margin-right: 0; }
figure img { width: 100%; border: 1px solid #ddd; display: block; }
figcaption { font-size: 8pt; color: #555; text-align: center; margin-top: 2px; }
.terminal img { width: 100%; }
.page { page-break-before: always; }
"""


def _status(s: str) -> str:
    return f'<span class="status s-{escape(s.replace(" ", "."))}">{escape(s)}</span>'


def _dur(s: Optional[float]) -> str:
    return "" if s is None else f" · {s:.1f} s"


def _proc_item(s) -> str:
    return (f"<b>{escape(s.title)}</b> {_status(s.status)}{_dur(s.duration_s)}"
            + (f"<br><code>{escape(s.command)}</code>" if s.command else "")
            + (f'<br><span class="what">{escape(s.what)}</span>' if s.what else ""))


def render(doc: Document, src: Callable[[object], str], terminal_src: Optional[str]) -> str:
    h = ['<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
         f"<title>{escape(doc.title)}</title><style>{CSS}</style></head><body>",
         f"<h1>{escape(doc.title)}</h1>", f'<p class="meta">Generated {escape(doc.generated)}</p>',
         f'<div class="banner {doc.status}">{escape(doc.headline)}</div>']
    for f in doc.failures:
        h.append(f"<p><b>{escape(f.message)}</b></p>")
        if f.output:
            h.append(f"<pre>{escape(f.output)}</pre>")
    h += [f'<div class="note">{escape(n)}</div>' for n in doc.notes]

    h += ["<h2>1. Procedure</h2>",
          "<p>Run from a dpdeploy checkout; on a fresh host <code>python3 bootstrap.py &lt;task&gt;</code> "
          "creates the tools environment and runs <code>invoke &lt;task&gt;</code>.</p>", '<ol class="proc">']
    groups: list[tuple[object, list]] = []
    for s in doc.procedure:
        if "." in s.number and groups:
            groups[-1][1].append(s)
        else:
            groups.append((s, []))
    for top, children in groups:
        subs = "".join(f"<li>{_proc_item(c)}</li>" for c in children)
        h.append(f"<li>{_proc_item(top)}" + (f'<ol class="sub">{subs}</ol>' if subs else "") + "</li>")
    h.append("</ol>")

    h += ["<h2>2. Environment</h2>", "<table>"]
    h += [f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in doc.environment]
    h.append("</table>")

    h.append("<h2>3. Photos</h2>")
    if not doc.photos:
        h.append("<p>No photos: there is no predict run with outputs.</p>")
    for ph in doc.photos:
        h += ['<div class="photo">', f"<h3>{escape(ph.name)} {_status(ph.status)}</h3>"]
        if ph.error:
            h.append(f"<pre>{escape(ph.error)}</pre>")
        h.append('<div class="grid">')
        for _, caption, path in ph.figures:
            h.append(f'<figure><img src="{src(path)}" alt="{escape(caption)}">'
                     f"<figcaption>{escape(caption)}</figcaption></figure>")
        h.append("</div>")
        if ph.facts:
            h.append("<table>" + "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in ph.facts) + "</table>")
        h.append("</div>")

    h += ['<h2 class="page">4. Terminal</h2>']
    if terminal_src:
        h += [f"<p>The captured terminal of run <code>{escape(doc.terminal_run or '')}</code>:</p>",
              f'<div class="terminal"><img src="{terminal_src}" alt="terminal: {escape(doc.terminal_command or "")}"></div>']
    else:
        h.append("<p>No terminal capture was recorded.</p>")

    h += ["<h2>5. Timings and smoke tests</h2>", "<table><tr><th>what</th><th>seconds</th></tr>"]
    h += [f'<tr><td>{escape(k)}</td><td class="num">{v:.2f}</td></tr>' for k, v in doc.timings]
    h.append("</table>")
    if not doc.suites:
        h.append("<p>No smoke-test results (JUnit XML) in the run records.</p>")
    for s in doc.suites:
        h.append(f"<p><b>{escape(s.name)}</b>: {s.tests} tests, {s.failures} failed, {s.errors} errors, "
                 f"{s.skipped} skipped ({s.time_s:.1f} s)</p><table>")
        h += [f"<tr><td>{_status(st)}</td><td><code>{escape(n)}</code>{(' — ' + escape(m)) if m else ''}</td></tr>"
              for n, st, m in s.cases]
        h.append("</table>")
    h.append("<p class=\"meta\">Run records: " + ", ".join(f"{escape(k)} <code>{escape(v)}</code>" for k, v in doc.runs) + "</p>"
             if doc.runs else "<p class=\"meta\">No run records.</p>")
    h.append("</body></html>")
    return "\n".join(h) + "\n"
