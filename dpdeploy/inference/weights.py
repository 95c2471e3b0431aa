"""DensePose weights: download (resumable), import, verify, cache.

The cache is ``<home>/cache/weights/``:

| file | what |
| --- | --- |
| ``<model>.pkl`` | the verified weights; only ever put there by ``os.replace`` after verification |
| ``<model>.pkl.json`` | sidecar (the cache manifest): source, size, md5, sha256, ``trust`` |
| ``<model>.pkl.part`` | an interrupted download; the next fetch resumes it with an HTTP Range request |
| ``<model>.pkl.rejected`` | the last download that failed verification, kept for inspection |

A file is accepted when its size and sha256 match env/matrix.yml (``trust: pinned``). A model
whose matrix entry has no sha256 is refused unless the user passes ``--trust-on-first-use``:
then the file's own sha256 is recorded in the sidecar with ``trust: tofu`` and later runs
re-check the cached file against that recorded hash (it never goes into the matrix: a hash
of an unverified download proves nothing about the publisher's file). Either way the file
must also load as a DensePose checkpoint with dpdeploy.inenv.checkpoint's restricted
unpickler (no code runs) before it is moved into place.

Disk full (ENOSPC) keeps the ``.part`` file: what it holds is a correct prefix of the file, so
after freeing space the next run resumes instead of starting over; the error names its size
and path so the user can delete it instead. A final file is never written unverified.
"""
from __future__ import annotations

import errno
import hashlib
import http.client
import os
import socket
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional
from urllib.parse import urlparse

from dpdeploy.diagnose.checks import Check
from dpdeploy.fsutil import atomic_write_json, read_json
from dpdeploy.plan.matrix import Matrix

CHUNK = 1 << 20
# Automatic resumes within one fetch after the server cut the connection (our choice).
RESUME_ATTEMPTS = 3
Progress = Callable[[int, Optional[int]], None]  # (bytes so far, total or None)


class WeightsError(Exception):
    """Weights could not be fetched or verified: what, why, next step; ``kind`` for callers."""

    def __init__(self, kind: str, what: str, why: str, next_step: str):
        super().__init__(what)
        # not_found | timeout | unreachable | interrupted | http | checksum | checkpoint | untrusted
        # | disk_full | source | model
        self.kind = kind
        self.what, self.why, self.next_step = what, why, next_step

    def __str__(self) -> str:
        return f"{self.what}\n  why: {self.why}\n  next: {self.next_step}"

    def to_dict(self) -> dict:
        return {"error": self.what, "kind": self.kind, "why": [self.why], "next": [self.next_step]}

    @property
    def unavailable(self) -> bool:
        """The weights cannot be reached from here (as opposed to a wrong or broken file)."""
        return self.kind in {"not_found", "timeout", "unreachable", "interrupted", "http"}


@dataclass(frozen=True)
class ModelSpec:
    name: str
    url: str
    md5_prefix: str
    sha256: Optional[str]
    size: Optional[int] = None

    @classmethod
    def from_matrix(cls, matrix: Matrix, name: str = "") -> "ModelSpec":
        name = name or matrix.default_model
        if name not in matrix.models:
            raise WeightsError("model", f"unknown model {name!r}", f"{matrix.path} lists: {', '.join(matrix.models)}",
                               "pass one of those with --model")
        entry = matrix.models[name]
        return cls(name, matrix.model_url(name), entry["md5_prefix"], entry.get("sha256"), entry.get("size"))

    @property
    def file_name(self) -> str:
        return self.url.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Fetched:
    model: str
    path: str
    source: str
    action: str          # cached | downloaded | resumed | imported
    size: int
    md5: str
    sha256: str
    trust: str           # pinned (env/matrix.yml's sha256) | tofu (trusted on first use)

    def to_dict(self) -> dict:
        return asdict(self)


# --- paths ----------------------------------------------------------------------------------

def cache_dir(home: str | Path) -> Path:
    return Path(home) / "cache" / "weights"


def final_path(home: str | Path, model: str) -> Path:
    return cache_dir(home) / f"{model}.pkl"


def _beside(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


# --- verification ---------------------------------------------------------------------------

def file_hashes(path: Path) -> tuple[str, str]:
    md5, sha = hashlib.md5(), hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            md5.update(block)
            sha.update(block)
    return md5.hexdigest(), sha.hexdigest()


def mismatches(spec: ModelSpec, md5: str, sha256: str, size: int) -> list[str]:
    """Each differing size or checksum as 'which: expected X, got Y' (empty when the file is right)."""
    out = []
    if spec.size is not None and size != spec.size:
        out.append(f"size (env/matrix.yml): expected {spec.size} bytes, got {size}")
    if not md5.startswith(spec.md5_prefix):
        out.append(f"md5 prefix (from the zoo file name {spec.file_name}): expected {spec.md5_prefix}, "
                   f"got {md5[:6]} (md5 {md5})")
    if spec.sha256 and sha256 != spec.sha256:
        out.append(f"sha256 (env/matrix.yml): expected {spec.sha256}, got {sha256}")
    return out


def untrusted(spec: ModelSpec) -> WeightsError:
    """The refusal for a model with no pinned sha256 when trust on first use was not asked for."""
    return WeightsError(
        "untrusted", f"{spec.name}: env/matrix.yml pins no sha256 for it, so a file cannot be verified",
        "without it only the 24-bit md5 prefix in the zoo file name could be checked, which any "
        "altered file can be made to match",
        "pin sha256 and size in env/matrix.yml only from a source you trust (the publisher), or accept "
        "this one download unverified with `invoke weights --trust-on-first-use` (recorded as such)")


def cached(home: str | Path, spec: ModelSpec) -> Optional[Fetched]:
    """The cached file if it still verifies against the matrix's sha256, or against the hash
    recorded when it was trusted on first use (the matrix has none); re-hashed, ~1 s for 250 MB.
    The one rule for "may this cached file be used" (weights step, predict, serve, verify)."""
    return cached_why(home, spec)[0]


def cached_why(home: str | Path, spec: ModelSpec) -> tuple[Optional[Fetched], str]:
    """``cached``, and why it refuses the file ("" when it verifies)."""
    path = final_path(home, spec.name)
    if not path.is_file():
        return None, f"no file {path}"
    side = read_json(_beside(path, ".json"))
    side = side if isinstance(side, dict) else {}
    md5, sha = file_hashes(path)
    size = path.stat().st_size
    wrong = mismatches(spec, md5, sha, size)
    if wrong:
        return None, "; ".join(wrong)
    if spec.sha256:
        trust = "pinned"
    elif side.get("trust") == "tofu" and side.get("sha256") == sha and side.get("size") == size:
        trust = "tofu"
    elif side.get("trust") == "tofu":
        return None, (f"sha256 {sha[:16]}... / {size} bytes, recorded on first use "
                      f"{str(side.get('sha256'))[:16]}... / {side.get('size')} bytes")
    else:
        return None, "env/matrix.yml pins no sha256 for it and no trust-on-first-use record was kept"
    return Fetched(spec.name, str(path), side.get("source", ""), "cached", size, md5, sha, trust), ""


def weights_check(home: Path, matrix: Matrix) -> Check:
    """Each model's cached file (<home>/cache/weights/<model>.pkl) by the rule the weights step and
    predict use (``weights.cached``): the matrix's sha256, or the hash recorded on first use."""
    bad, good = [], []
    for name in matrix.models:
        spec = ModelSpec.from_matrix(matrix, name)
        path = final_path(home, name)
        if not path.is_file():
            continue
        hit, why = cached_why(home, spec)
        if hit is None:
            bad.append(f"{name}: {path}: {why}")
        else:
            how = "sha256 pinned in env/matrix.yml" if hit.trust == "pinned" else "the hash recorded on first use"
            good.append(f"{name}: {path} (matches {how})")
    if bad:
        return Check("weights", "fail", f"{len(bad)} cached weights files do not verify",
                     "the file was corrupted or replaced after `invoke weights` checked it",
                     "remove it and run invoke weights", tuple(bad + good))
    if not good:
        return Check("weights", "skip", f"no weights cached in {cache_dir(home)}", "nothing to checksum",
                     "invoke weights")
    return Check("weights", "ok", f"{len(good)} cached weights files verify", details=tuple(good))


def _install(part: Path, spec: ModelSpec, home: str | Path, source: str, action: str,
             on_mismatch: Callable[[Path], str]) -> Fetched:
    """Verify ``part`` and move it into place; on a mismatch call ``on_mismatch`` and raise."""
    md5, sha = file_hashes(part)
    size = part.stat().st_size
    again = (f"the cached file (if any) is untouched. Get the file again from {spec.url} (or a trusted "
             "copy) and check it was not truncated or altered")
    wrong = mismatches(spec, md5, sha, size)
    if wrong:
        kept = on_mismatch(part)
        raise WeightsError("checksum", f"{spec.name}: checksum mismatch for {source}", "; ".join(wrong),
                           f"{kept}; {again}")
    from dpdeploy.inenv import checkpoint   # numpy: only when a checkpoint is read, not at every CLI start

    try:
        checkpoint.check(checkpoint.load(part))
    except checkpoint.CheckpointError as exc:
        kept = on_mismatch(part)
        raise WeightsError("checkpoint", f"{spec.name}: {source} is not a loadable DensePose checkpoint",
                           str(exc), f"{kept}; {again}") from None
    trust = "pinned" if spec.sha256 else "tofu"
    final = final_path(home, spec.name)
    os.replace(part, final)
    atomic_write_json(_beside(final, ".json"), {
        "model": spec.name, "source": source, "size": size, "md5": md5, "sha256": sha, "trust": trust,
        "zoo_url": spec.url, "verified_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **({"warning": "trusted on first use: no sha256 in env/matrix.yml to verify it against; this "
                       "hash only detects later changes to the cached file"} if trust == "tofu" else {}),
    })
    return Fetched(spec.name, str(final), source, action, size, md5, sha, trust)


def _disk_full(exc: OSError, part: Path, keep: bool) -> WeightsError:
    size = part.stat().st_size if part.exists() else 0
    if keep:
        nxt = (f"free space on {part.parent} and run this again to resume from {size} bytes "
               f"(or delete {part} to start over)")
    else:
        nxt = f"free space on {part.parent} and run this again"
    return WeightsError("disk_full", f"disk full while writing {part}", str(exc), nxt)


# --- import a local file --------------------------------------------------------------------

def import_file(home: str | Path, spec: ModelSpec, source: Path, progress: Progress = lambda n, t: None) -> Fetched:
    """Copy a hand-copied file into the cache (verified); ``source`` is never moved or changed."""
    source = Path(source).expanduser()
    if not source.is_file():
        raise WeightsError("source", f"{source} is not a file", "--from must name the downloaded .pkl",
                           f"copy {spec.file_name} from {spec.url} onto this machine and pass its path")
    cache_dir(home).mkdir(parents=True, exist_ok=True)
    tmp = _beside(final_path(home, spec.name), ".import")
    total = source.stat().st_size

    def drop_copy(part: Path) -> str:
        part.unlink()
        return f"{source} was left as it is (only dpdeploy's copy was removed)"

    try:
        try:
            with open(source, "rb") as src, open(tmp, "wb") as dst:
                done = 0
                for block in iter(lambda: src.read(CHUNK), b""):
                    dst.write(block)
                    done += len(block)
                    progress(done, total)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise _disk_full(exc, tmp, keep=False) from None
            raise
        return _install(tmp, spec, home, str(source), "imported", drop_copy)
    finally:
        tmp.unlink(missing_ok=True)  # our own partial copy on any exit (installed: already renamed away)


# --- download -------------------------------------------------------------------------------

def _open(url: str, offset: int, timeout: float):
    request = urllib.request.Request(url, headers={"User-Agent": "dpdeploy"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    return urllib.request.urlopen(request, timeout=timeout)  # http/https only, checked by the callers


def _network_error(exc: BaseException, url: str, spec: ModelSpec, timeout: float) -> WeightsError:
    host = urlparse(url).netloc
    by_hand = (f"copy {spec.file_name} in by hand (from {spec.url}) and run "
               f"`invoke weights --model {spec.name} --from PATH`")
    if isinstance(exc, urllib.error.HTTPError):
        if exc.code == 404:
            return WeightsError("not_found", f"{url} does not exist (HTTP 404)",
                                f"{host} has no such file", f"check the URL, or {by_hand}")
        return WeightsError("http", f"{url}: HTTP {exc.code} {exc.reason}", f"{host} refused the download", by_hand)
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(reason, (socket.timeout, TimeoutError)):
        return WeightsError("timeout", f"{url}: no answer within {timeout:g} s",
                            f"{host} accepted no connection or stopped sending",
                            f"retry later (a .part file is resumed), or {by_hand}")
    return WeightsError("unreachable", f"cannot reach {host}", f"{reason}", by_hand)


def download(home: str | Path, spec: ModelSpec, url: str = "", timeout: float = 30,
             progress: Progress = lambda n, t: None) -> Fetched:
    """Download ``url`` (default the zoo URL) into the cache, resuming a ``.part`` file."""
    url = url or spec.url
    if _scheme(url) not in {"http", "https"}:
        raise WeightsError("source", f"{url} is not an http(s) URL", "only http and https downloads are supported",
                           "pass an http(s) URL or a local file to --from")
    final = final_path(home, spec.name)
    part = _beside(final, ".part")
    final.parent.mkdir(parents=True, exist_ok=True)
    resumed = part.exists() and part.stat().st_size > 0
    for _attempt in range(RESUME_ATTEMPTS + 1):
        complete = _fetch_once(url, part, timeout, spec, progress)
        if complete:
            break
        resumed = True
    else:
        have = part.stat().st_size
        raise WeightsError("interrupted", f"{url}: the connection was cut {RESUME_ATTEMPTS + 1} times",
                           f"{have} bytes are kept in {part}", "run this again to resume")

    def reject(bad: Path) -> str:
        aside = _beside(final, ".rejected")
        os.replace(bad, aside)
        return f"the downloaded file was kept as {aside} for inspection"

    return _install(part, spec, home, url, "resumed" if resumed else "downloaded", reject)


def _fetch_once(url: str, part: Path, timeout: float, spec: ModelSpec, progress: Progress) -> bool:
    """One request appending to ``part``; True when the file is complete, False when cut short."""
    offset = part.stat().st_size if part.exists() else 0
    try:
        response = _open(url, offset, timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # nothing left past our offset: the .part is whole
            return True
        raise _network_error(exc, url, spec, timeout) from None
    except (urllib.error.URLError, OSError) as exc:
        raise _network_error(exc, url, spec, timeout) from None
    with response:
        if offset and response.status != 206:  # server ignored Range: start over
            offset = 0
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None else None
        mode = "ab" if offset else "wb"
        done = offset
        try:
            with open(part, mode) as out:
                while True:
                    try:   # read1: what has arrived, so a stall later loses none of it
                        block = response.read1(CHUNK)
                    except (socket.timeout, TimeoutError) as exc:
                        raise _network_error(exc, url, spec, timeout) from None
                    except (http.client.IncompleteRead, ConnectionError):
                        return False
                    if not block:
                        break
                    out.write(block)
                    done += len(block)
                    progress(done, total)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise _disk_full(exc, part, keep=True) from None
            raise
    return total is None or done >= total


# --- one entry point ------------------------------------------------------------------------

def _scheme(source: str) -> str:
    """The URL scheme of ``source`` ("" for a path); a URL that does not parse is refused."""
    try:
        parsed = urlparse(source)
        parsed.port  # noqa: B018  (a bad port or bracketed host raises only here)
    except ValueError as exc:
        raise WeightsError("source", f"--from {source}: not a valid URL ({exc})",
                           "the host or port cannot be read", "pass an http(s) URL or a local file to --from") from None
    return parsed.scheme


def resolve_source(spec: ModelSpec, source: str) -> tuple[str, str]:
    """``source`` ("" = the zoo) -> ("url", URL) or ("file", PATH).

    An http(s) URL ending in ``.pkl`` is the file itself; any other URL is a mirror of the
    zoo's layout (``<base>/<model>/<id>/model_final_<md5>.pkl``). A local folder may hold
    ``<model>.pkl``, the zoo file name, or the zoo layout.
    """
    if not source:
        return "url", spec.url
    if _scheme(source) in {"http", "https"}:
        if source.endswith(".pkl"):
            return "url", source
        return "url", source.rstrip("/") + spec.url.split("/densepose", 1)[1]
    path = Path(source).expanduser()
    if path.is_dir():
        zoo_tail = spec.url.split("/densepose/", 1)[1]
        for candidate in (path / f"{spec.name}.pkl", path / spec.file_name, path / zoo_tail):
            if candidate.is_file():
                return "file", str(candidate)
        raise WeightsError("source", f"{path} holds no weights for {spec.name}",
                           f"looked for {spec.name}.pkl, {spec.file_name} and {zoo_tail}",
                           f"copy {spec.file_name} into {path}")
    return "file", str(path)


def fetch(home: str | Path, spec: ModelSpec, source: str = "", timeout: float = 30,
          progress: Progress = lambda n, t: None, trust_on_first_use: bool = False) -> Fetched:
    """The cached file if it verifies, else download or import it from ``source``; a model
    without a pinned sha256 is refused before any transfer unless ``trust_on_first_use``."""
    hit = cached(home, spec)
    if hit:
        return hit
    if not spec.sha256 and not trust_on_first_use:
        raise untrusted(spec)
    kind, where = resolve_source(spec, source)
    if kind == "file":
        return import_file(home, spec, Path(where), progress)
    return download(home, spec, where, timeout, progress)

