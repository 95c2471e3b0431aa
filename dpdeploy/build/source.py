"""Get detectron2's source into ``<home>/cache/src/`` and establish which commit it is.

Sources (``--source``):
- "" (default) or a URL: ``git clone`` of that repository (default: the matrix's GitHub repo).
- a local git repository or checkout: cloned (committed history only; never modified).
- an archive (.tar.gz, .tgz, .tar, .zip): unpacked atomically into the cache.
- a plain directory: copied into the cache.

The commit of a git source is ``git rev-parse HEAD`` after checking out the pinned commit.
An archive or plain directory has no history, so its commit is taken, in this order, from:
1. the commit ``git archive`` embeds (tar pax header ``comment``, zip archive comment);
   GitHub's ``/archive/<commit>.tar.gz`` downloads carry it;
2. a ``.dpdeploy-commit`` file at the tree's root holding the full 40-hex commit;
3. a full 40-hex commit in the archive's (or directory's) name or its single top folder
   (GitHub names archives ``detectron2-<commit>``).
These are declarations, not proofs; ``how`` records which one was used. An archive is read to
its end first (gzip CRC and length, zip member CRCs, nothing after the tar listing's last
member but padding), and the unpacked tree must match the archive's listing, so a truncated
or damaged download is refused instead of building whatever part of it unpacked.
An archive or directory that declares the pinned commit must also hash (``pinned_content``) to the
matrix's ``detectron2.tree_sha256``: a plain .tar carries no checksum, so a changed byte is otherwise
invisible (with ``allow_unpinned`` it is built, recorded as unpinned). A git source proves its commit.
``tree`` (a hash of the cached tree's content) goes into the wheel cache key beside the commit. A source whose
commit differs from the pin, or is unknown, is refused unless ``allow_unpinned``; then
``pinned`` is False and callers record that loudly. Builds never run in the user's tree:
the caller copies ``Source.path`` (a cache folder owned by dpdeploy) before building.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import tarfile
import tempfile
import zipfile
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

from dpdeploy import runner as runner_mod
from dpdeploy.fsutil import sha256_file

COMMIT = re.compile(r"(?<![0-9a-f])[0-9a-f]{40}(?![0-9a-f])")
MARKER = ".dpdeploy-commit"
ARCHIVES = (".tar.gz", ".tgz", ".tar", ".zip")
CHUNK = 1 << 20
DAMAGED = (OSError, EOFError, zlib.error, tarfile.TarError, zipfile.BadZipFile)


class SourceError(Exception):
    """The source cannot be used: what failed, why, and the next step."""


@dataclass(frozen=True)
class Source:
    spec: str             # what the user passed ("" resolved to the repo URL)
    kind: str             # "git", "archive" or "directory"
    path: str             # the tree in the cache (never the user's)
    commit: Optional[str]  # 40-hex commit, None when unknown
    how: str              # how the commit was established
    pinned: bool          # commit == the matrix's pin
    identity: str         # commit, or a content hash when the commit is unknown (cache key)
    tree: str = ""        # sha256 of the cached tree's paths and contents (cache key)

    def to_dict(self) -> dict:
        return asdict(self)


def kind_of(spec: str) -> str:
    """"git", "archive" or "directory" for a --source value."""
    if not spec or "://" in spec or spec.startswith("git@"):
        return "git"
    path = Path(spec).expanduser()
    if path.is_file() and spec.endswith(ARCHIVES):
        return "archive"
    if path.is_dir():
        bare = (path / "HEAD").is_file() and (path / "objects").is_dir()
        return "git" if (path / ".git").exists() or bare else "directory"
    raise SourceError(f"--source {spec}: not a URL, an existing directory, or a .tar.gz/.tgz/.tar/.zip file; "
                      "next: pass a detectron2 clone, checkout or archive")



def tree_hash(root: Path, skip: tuple[str, ...] = ()) -> str:
    """sha256 over relative paths and contents (identity of a tree with no known commit); ``skip``:
    top-level names left out."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and ".git" not in p.relative_to(root).parts
                       and p.relative_to(root).parts[0] not in skip):
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        digest.update(sha256_file(path).encode())
    return digest.hexdigest()


def pinned_content(root: Path) -> str:
    """The hash compared with the matrix's ``detectron2.tree_sha256``: the tree without dpdeploy's marker."""
    return tree_hash(root, skip=(MARKER,))


def _check_pinned_tree(spec: str, root: Path, commit: Optional[str], pin: str, pin_tree: str,
                       allow_unpinned: bool) -> str:
    """For an archive or folder that only declares the pinned commit: "" when its content is the
    pinned tree (or no tree is pinned); else refused, or with ``allow_unpinned`` why it is not."""
    if commit != pin or not pin_tree:
        return ""
    found = pinned_content(root)
    if found == pin_tree:
        return ""
    why = (f"its content (tree sha256 {found[:16]}...) is not the pinned commit's "
           f"(env/matrix.yml detectron2.tree_sha256 {pin_tree[:16]}...)")
    if not allow_unpinned:
        raise SourceError(f"detectron2 source {spec} claims the pinned commit {pin[:12]}, but {why}: it was changed "
                          "or damaged; refusing to build. next: get a clean copy of that commit, or pass "
                          "--allow-unpinned to build it anyway (recorded as unpinned)")
    return why


def _decide(spec: str, kind: str, path: Path, commit: Optional[str], how: str, pin: str,
            allow_unpinned: bool, identity: str, differs: str = "") -> Source:
    pinned = commit == pin and not differs
    if differs:
        how = f"{how}; NOT the pinned tree: {differs}"
        identity = f"tree:{tree_hash(path)}"
    if not pinned and not allow_unpinned:
        found = f"is at commit {commit} ({how})" if commit else f"has no known commit ({how})"
        raise SourceError(f"detectron2 source {spec or 'default'} {found}, but the matrix pins {pin}; "
                          "refusing to build. "
                          f"next: use a source at {pin}, add a {MARKER} file / the commit in the archive name "
                          "if it is that commit, or pass --allow-unpinned to build it anyway (recorded as unpinned)")
    return Source(spec, kind, str(path), commit, how, pinned, identity, tree_hash(path))


# --- git ------------------------------------------------------------------------------------

def _git(run, *args: str, cwd: Optional[Path] = None, timeout: float = 600):
    done = run(["git", *args], cwd=str(cwd) if cwd else None, timeout=timeout)
    if done is None:
        raise SourceError("git is not installed or timed out; next: install git (apt install git)")
    return done


def from_git(url: str, pin: str, cache: Path, allow_unpinned: bool, run=runner_mod.run) -> Source:
    """Clone (once) into the cache, check out the pin, and read the commit back."""
    dest = cache / ("git-" + hashlib.sha256(url.encode()).hexdigest()[:16])
    if not (dest / ".git").exists():
        cache.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".clone-", dir=cache))
        done = _git(run, "clone", "--quiet", "--no-checkout", url, str(tmp / "repo"))
        if not done.ok:
            shutil.rmtree(tmp, ignore_errors=True)
            last = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode
            raise SourceError(f"git clone {url} failed: {last}; "
                              "next: check network access, or pass --source with a local clone or a tarball")
        os.replace(tmp / "repo", dest)
        tmp.rmdir()
    how = "git rev-parse HEAD after checking out the pinned commit"
    if not _git(run, "checkout", "--quiet", "--force", "--detach", pin, cwd=dest).ok:
        _git(run, "fetch", "--quiet", "origin", cwd=dest)
        if not _git(run, "checkout", "--quiet", "--force", "--detach", pin, cwd=dest).ok:
            if not allow_unpinned:
                raise SourceError(f"{url} does not contain the pinned commit {pin}; refusing to build. "
                                  "next: update that clone (git fetch), use another source, or pass --allow-unpinned "
                                  "to build its default branch (recorded as unpinned)")
            _git(run, "checkout", "--quiet", "--force", "--detach", "origin/HEAD", cwd=dest)
            how = f"git rev-parse HEAD of {url}'s default branch (pinned commit absent)"
    _git(run, "clean", "-qffdx", cwd=dest)
    head = _git(run, "rev-parse", "HEAD", cwd=dest).stdout.strip()
    return _decide(url, "git", dest, head or None, how, pin, allow_unpinned, head)


# --- archives and plain directories ---------------------------------------------------------

def _damaged(archive: Path, why: str) -> SourceError:
    return SourceError(f"archive {archive} is damaged or incomplete: {why}; refusing to use it. "
                       "next: download it again (compare its size and checksum with the original)")


def _listing(archive: Path) -> tuple[dict[str, str], str]:
    """Read the whole archive: {member name: "file" | "dir" | "link"} and the embedded comment.

    Every byte is read: gzip's CRC and length trailer, each zip member's CRC, and for a tar
    everything after the last listed member must be zero padding (tarfile stops silently at a
    damaged header after the first one, which would drop the rest of the tree).
    """
    try:
        if archive.name.endswith(".zip"):
            with zipfile.ZipFile(archive) as zf:
                bad = zf.testzip()
                if bad is not None:
                    raise _damaged(archive, f"member {bad} fails its CRC check")
                _no_duplicates(archive, [i.filename for i in zf.infolist()])
                names = {i.filename.rstrip("/"): "dir" if i.is_dir() else "file" for i in zf.infolist()}
                return names, zf.comment.decode("ascii", "replace")
        with tarfile.open(archive) as tf:
            members = tf.getmembers()
            tf.fileobj.seek(tf.offset)
            while block := tf.fileobj.read(CHUNK):
                if block.strip(b"\0"):
                    last = members[-1].name if members else "(none)"
                    raise _damaged(archive, f"data after its last readable member {last} is not in its listing "
                                            "(a damaged tar header)")
            _no_duplicates(archive, [m.name for m in members])
            names = {m.name.rstrip("/"): "dir" if m.isdir() else "link" if m.issym() or m.islnk() else "file"
                     for m in members}
            return names, tf.pax_headers.get("comment", "")
    except DAMAGED as exc:
        raise _damaged(archive, f"{type(exc).__name__}: {exc or 'unexpected end of data'}") from None


def _no_duplicates(archive: Path, names: list[str]) -> None:
    """A member listed twice: which copy ends up in the tree depends on the unpacker (the second
    silently replaces the first), so the listing cannot be checked against the tree."""
    seen: set[str] = set()
    for name in names:
        name = name.rstrip("/")
        if name in seen:
            raise _damaged(archive, f"member {name} is listed twice")
        seen.add(name)


def _embedded_commit(comment: str) -> Optional[str]:
    """The commit ``git archive`` stores: tar pax global header "comment" or the zip comment."""
    match = COMMIT.fullmatch(comment.strip())
    return match.group(0) if match else None


def _tree_differences(root: Path, names: dict[str, str]) -> list[str]:
    """How the unpacked ``root`` differs from the archive's listing (empty when it matches)."""
    found = {}
    for path in root.rglob("*"):
        rel = path.relative_to(root).as_posix()
        found[rel] = "link" if path.is_symlink() else "dir" if path.is_dir() else "file"
    wanted = {n: k for n, k in names.items() if n and n != "pax_global_header"}
    # a member's parent folders may be implied rather than listed
    for name in list(wanted):
        parts = name.split("/")
        for i in range(1, len(parts)):
            wanted.setdefault("/".join(parts[:i]), "dir")
    out = [f"missing {n}" for n in sorted(set(wanted) - set(found))]
    out += [f"not in the archive: {n}" for n in sorted(set(found) - set(wanted))]
    out += [f"{n} is a {found[n]}, the archive lists a {wanted[n]}" for n in sorted(set(wanted) & set(found))
            if found[n] != wanted[n] and wanted[n] != "link"]
    return out


def _declared_commit(root: Path, names: list[str]) -> tuple[Optional[str], str]:
    marker = root / MARKER
    if marker.is_file():
        text = marker.read_text(encoding="utf-8").strip()
        if not COMMIT.fullmatch(text):
            raise SourceError(f"{marker} must hold one full 40-hex commit, found {text[:60]!r}")
        return text, f"{MARKER} file"
    for name in names:
        match = COMMIT.search(name)
        if match:
            return match.group(0), f"the commit in the name {name!r}"
    return None, f"no git history, no {MARKER} file, no commit in the name"


def _single_top(folder: Path) -> Path:
    entries = [p for p in folder.iterdir() if not p.name.startswith("pax_global_header")]
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else folder


def _unpack(archive: Path, into: Path) -> None:
    if archive.name.endswith(".zip"):
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(into)
    else:
        with tarfile.open(archive) as tf:
            # the "data" filter (refuses paths outside ``into``) exists from Python 3.10.12 / 3.11.4
            tf.extractall(into, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))


def _strip_top(names: dict[str, str], top: Optional[str]) -> dict[str, str]:
    """The listing relative to its single top folder (what ends up in the cache entry)."""
    if top is None:
        return names
    return {n[len(top) + 1:]: k for n, k in names.items() if n.startswith(top + "/")}


def from_archive(archive: Path, pin: str, cache: Path, allow_unpinned: bool, pin_tree: str = "") -> Source:
    """Check the archive, unpack it (once per archive content) into the cache and check the
    tree against its listing; the commit as the module doc says."""
    names, comment = _listing(archive)
    top = _single_top_name(names)
    listed = _strip_top(names, top)
    digest = sha256_file(archive)
    dest = cache / f"archive-{digest[:16]}"
    if dest.exists() and _tree_differences(dest, listed):  # e.g. unpacked by an older dpdeploy
        shutil.rmtree(dest)
    if not dest.exists():
        cache.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".unpack-", dir=cache))
        try:
            _unpack(archive, tmp)
            tree = _single_top(tmp)
            wrong = _tree_differences(tree, listed)
            if wrong:
                raise SourceError(f"unpacking {archive} did not give the tree its listing names "
                                  f"({len(wrong)} differences, e.g. {'; '.join(wrong[:3])}); refusing to use it. "
                                  "next: check free disk space in the cache, or download the archive again")
            os.replace(tree, dest)
        except DAMAGED as exc:
            raise _damaged(archive, f"{type(exc).__name__}: {exc or 'unexpected end of data'}") from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    commit, how = _embedded_commit(comment), "the commit git archive embedded"
    if commit is None:
        commit, how = _declared_commit(dest, [archive.name] + ([top] if top else []))
    differs = _check_pinned_tree(str(archive), dest, commit, pin, pin_tree, allow_unpinned)
    return _decide(str(archive), "archive", dest, commit, how, pin, allow_unpinned, commit or f"sha256:{digest}",
                   differs)


def _single_top_name(names: dict[str, str]) -> Optional[str]:
    tops = {n.split("/", 1)[0] for n in names if n and n != "pax_global_header"}
    top = tops.pop() if len(tops) == 1 else None
    return top if top is not None and names.get(top, "dir") == "dir" and any("/" in n for n in names) else None


def from_directory(folder: Path, pin: str, cache: Path, allow_unpinned: bool, pin_tree: str = "") -> Source:
    """Copy a plain (non-git) tree into the cache, keyed by its content."""
    commit, how = _declared_commit(folder, [folder.resolve().name])
    differs = _check_pinned_tree(str(folder), folder, commit, pin, pin_tree, allow_unpinned)  # before it is copied
    identity = commit if commit == pin and not differs else f"tree:{tree_hash(folder)}"
    dest = cache / ("dir-" + hashlib.sha256(identity.encode()).hexdigest()[:16])
    if not dest.exists():
        cache.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".copy-", dir=cache))
        shutil.copytree(folder, tmp / "tree", symlinks=True)
        os.replace(tmp / "tree", dest)
        tmp.rmdir()
    return _decide(str(folder), "directory", dest, commit, how, pin, allow_unpinned, identity, differs)


def acquire(spec: str, repo: str, pin: str, cache: Path, allow_unpinned: bool = False,
            run=runner_mod.run, pin_tree: str = "") -> Source:
    """The source ``spec`` ("" = ``repo``) at ``pin``, in ``cache``; refused unless pinned or allowed.
    An archive or folder that declares ``pin`` must also have the content ``pin_tree`` (git proves
    its commit by its own hashes)."""
    if "://" in spec and spec.endswith(ARCHIVES):
        raise SourceError(f"--source {spec}: download the archive first and pass its path (dpdeploy does not "
                          "fetch archives over the network)")
    kind = kind_of(spec)
    if kind == "git":
        url = spec or repo
        return from_git(url if "://" in url or url.startswith("git@") else str(Path(url).expanduser().resolve()),
                        pin, cache, allow_unpinned, run)
    if kind == "archive":
        return from_archive(Path(spec).expanduser().resolve(), pin, cache, allow_unpinned, pin_tree)
    return from_directory(Path(spec).expanduser().resolve(), pin, cache, allow_unpinned, pin_tree)
