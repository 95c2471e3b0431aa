"""HTML -> PDF with WeasyPrint (pure Python from PyPI; needs pango from the OS).

Why WeasyPrint, not headless Chromium: it installs from the hashed tools lock like every other
tool (no 300 MB browser from apt, no sandbox flags, nothing listening), it renders print CSS
(@page size, margins, page counters) deterministically, and on Debian/Ubuntu pango is
already present on most hosts (``libpango-1.0-0 libpangoft2-1.0-0``).
"""
from __future__ import annotations

import logging


class PdfUnavailable(RuntimeError):
    """WeasyPrint or its system libraries are missing: what, why, next step."""


def render(html: str) -> bytes:
    try:
        from weasyprint import HTML
    except (ImportError, OSError) as exc:  # OSError: pango/gobject shared libraries not found
        raise PdfUnavailable(
            f"PDF not written: WeasyPrint cannot load ({str(exc).splitlines()[0]})\n"
            "  next: install pango (Debian/Ubuntu: sudo apt install libpango-1.0-0 libpangoft2-1.0-0) "
            "and run `invoke report --format pdf` again; the Markdown and HTML reports were written"
        ) from None
    logging.getLogger("weasyprint").setLevel(logging.ERROR)
    logging.getLogger("fontTools").setLevel(logging.ERROR)
    return HTML(string=html).write_pdf()
