"""Is a package index or channel reachable? One short request, so unreachable hosts fail fast."""
from __future__ import annotations

import urllib.error
import urllib.request
from typing import Callable, Optional

# url -> None when reachable, else why not (one line)
Reach = Callable[[str], Optional[str]]


def reachable(url: str, timeout: float = 5.0) -> Optional[str]:
    """None if ``url`` answers at all (any HTTP status counts), else the reason it did not."""
    request = urllib.request.Request(url, method="HEAD", headers={"User-Agent": "dpdeploy"})
    try:
        with urllib.request.urlopen(request, timeout=timeout):
            return None
    except urllib.error.HTTPError:
        return None  # the server answered; the index is there
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return f"{url} is unreachable ({reason})"
