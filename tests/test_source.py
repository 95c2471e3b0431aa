"""Source acquisition and commit verification, with real git repositories and archives."""
import io
import random
import subprocess
import tarfile
import zipfile
from pathlib import Path

import pytest

from dpdeploy.build import source as source_mod
from dpdeploy.build.source import MARKER, SourceError, acquire, kind_of, tree_hash

GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.com", "PATH": "/usr/bin:/bin:/usr/local/bin"}


def git(repo, *args):
    done = subprocess.run(["git", *args], cwd=repo, env=GIT_ENV, check=True, capture_output=True, text=True)
    return done.stdout.strip()


@pytest.fixture
def repo(tmp_path):
    """A repository with two commits: returns (path, first commit, second commit); HEAD at the second."""
    path = tmp_path / "d2"
    path.mkdir()
    git(path, "init", "-q")
    (path / "setup.py").write_text("v1\n")
    git(path, "add", ".")
    git(path, "commit", "-qm", "one")
    first = git(path, "rev-parse", "HEAD")
    (path / "setup.py").write_text("v2\n")
    git(path, "commit", "-qam", "two")
    return path, first, git(path, "rev-parse", "HEAD")


def test_git_checkout_is_built_at_the_pin_not_its_head(repo, tmp_path):
    path, first, second = repo
    src = acquire(str(path), "unused", first, tmp_path / "cache")
    assert src.kind == "git" and src.pinned and src.commit == first
    assert (tmp_path / "cache") in Path(src.path).parents
    assert open(f"{src.path}/setup.py").read() == "v1\n"
    assert git(path, "rev-parse", "HEAD") == second, "the user's checkout must not move"
    again = acquire(str(path), "unused", first, tmp_path / "cache")
    assert again.path == src.path


def test_missing_pin_is_refused_then_allowed_and_recorded(repo, tmp_path):
    path, _, second = repo
    pin = "a" * 40
    with pytest.raises(SourceError, match=f"does not contain the pinned commit {pin}.*--allow-unpinned"):
        acquire(str(path), "unused", pin, tmp_path / "cache")
    src = acquire(str(path), "unused", pin, tmp_path / "cache", allow_unpinned=True)
    assert not src.pinned and src.commit == second and "absent" in src.how


def test_unreachable_url_says_what_next(tmp_path):
    with pytest.raises(SourceError, match="git clone .* failed.*--source"):
        acquire("", f"file://{tmp_path}/nowhere.git", "a" * 40, tmp_path / "cache")


def _tar(path, files, comment=None, top="detectron2"):
    with tarfile.open(path, "w:gz", format=tarfile.PAX_FORMAT,
                      pax_headers={"comment": comment} if comment else None) as tf:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


def test_git_archive_embedded_commit_is_used(repo, tmp_path):
    path, first, _ = repo
    archive = tmp_path / "src.tar.gz"
    subprocess.run(["git", "archive", "--prefix=d2/", "-o", str(archive), first], cwd=path, check=True)
    src = acquire(str(archive), "unused", first, tmp_path / "cache")
    assert src.kind == "archive" and src.pinned and "git archive" in src.how
    assert open(f"{src.path}/setup.py").read() == "v1\n"


def test_archive_commit_from_marker_name_or_refused(tmp_path):
    pin = "0123456789abcdef0123456789abcdef01234567"
    marked = tmp_path / "marked.tgz"
    _tar(marked, {"setup.py": "x", MARKER: pin + "\n"})
    assert acquire(str(marked), "unused", pin, tmp_path / "cache").how == f"{MARKER} file"

    named = tmp_path / f"detectron2-{pin}.tar.gz"
    _tar(named, {"setup.py": "y"}, top=f"detectron2-{pin}")
    src = acquire(str(named), "unused", pin, tmp_path / "cache")
    assert src.pinned and "name" in src.how and (tmp_path / "cache").exists()

    anonymous = tmp_path / "src.tar"
    _tar(anonymous, {"setup.py": "z"})
    with pytest.raises(SourceError, match="has no known commit.*--allow-unpinned"):
        acquire(str(anonymous), "unused", pin, tmp_path / "cache")
    src = acquire(str(anonymous), "unused", pin, tmp_path / "cache", allow_unpinned=True)
    assert not src.pinned and src.commit is None and src.identity.startswith("sha256:")


def test_archive_with_other_commit_is_refused(tmp_path):
    other = "f" * 40
    archive = tmp_path / "a.tar.gz"
    _tar(archive, {"setup.py": "x"}, comment=other)
    with pytest.raises(SourceError, match=f"is at commit {other}.*pins {'0' * 40}"):
        acquire(str(archive), "unused", "0" * 40, tmp_path / "cache")


def test_zip_archive_unpacks_atomically_once(tmp_path):
    pin = "1" * 40
    archive = tmp_path / f"d2-{pin}.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("d2/setup.py", "zip")
    cache = tmp_path / "cache"
    src = acquire(str(archive), "unused", pin, cache)
    assert open(f"{src.path}/setup.py").read() == "zip"
    assert [p.name for p in cache.iterdir()] == [src.path.rsplit("/", 1)[1]], "no temp folders left behind"


def test_plain_directory_is_copied_not_used_in_place(tmp_path):
    pin = "2" * 40
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "setup.py").write_text("dir")
    (tree / MARKER).write_text(pin)
    src = acquire(str(tree), "unused", pin, tmp_path / "cache")
    assert src.kind == "directory" and src.pinned and src.path != str(tree)
    (tree / MARKER).write_text("not a commit")
    with pytest.raises(SourceError, match="must hold one full 40-hex commit"):
        acquire(str(tree), "unused", pin, tmp_path / "cache")


@pytest.mark.parametrize("spec, kind", [
    ("", "git"), ("https://github.com/facebookresearch/detectron2.git", "git"), ("git@github.com:x/y.git", "git"),
])
def test_kind_of_urls(spec, kind):
    assert kind_of(spec) == kind


def test_bad_source_paths(tmp_path):
    with pytest.raises(SourceError, match="not a URL, an existing directory"):
        kind_of(str(tmp_path / "missing"))
    with pytest.raises(SourceError, match="download the archive first"):
        acquire("https://example.com/d2.tar.gz", "unused", "0" * 40, tmp_path)


# --- archives read to the end and checked against their listing ------------------------------

PIN_A = "02b5c4e295e990042a714712c21dc79b731e8833"


def _git_style_archive(path, commit=PIN_A, files=40):
    """Like `git archive` output: pax global header with the commit, one top folder, many files."""
    rng = random.Random(0)
    _tar(path, {f"detectron2/mod{i}.py": "".join(rng.choice("0123456789abcdef") for _ in range(3000))
                for i in range(files)} | {"setup.py": "setup()\n"}, comment=commit)
    return path


def _unpacked(cache):
    return [p for p in cache.iterdir() if p.name.startswith("archive-")] if cache.exists() else []


def test_whole_archive_is_accepted_with_its_tree_hash(tmp_path):
    archive = _git_style_archive(tmp_path / "d2.tar.gz")
    src = acquire(str(archive), "unused", PIN_A, tmp_path / "cache")
    assert src.pinned and len(src.tree) == 64 and src.tree == tree_hash(Path(src.path))
    assert sorted(p.name for p in Path(src.path, "detectron2").iterdir())[:2] == ["mod0.py", "mod1.py"]


@pytest.mark.parametrize("cut", [0.5, 0.99])
def test_truncated_archive_is_refused_not_a_traceback(tmp_path, cut):
    whole = _git_style_archive(tmp_path / "whole.tar.gz").read_bytes()
    archive = tmp_path / "d2.tar.gz"
    archive.write_bytes(whole[: int(len(whole) * cut)])
    with pytest.raises(SourceError, match=r"damaged or incomplete: .*next: download it again"):
        acquire(str(archive), "unused", PIN_A, tmp_path / "cache")
    assert _unpacked(tmp_path / "cache") == []


@pytest.mark.parametrize("at", [0.3, 0.5, 0.7])
def test_archive_with_flipped_bytes_is_refused(tmp_path, at):
    data = bytearray(_git_style_archive(tmp_path / "whole.tar.gz").read_bytes())
    middle = int(len(data) * at)
    data[middle:middle + 16] = bytes(b ^ 0x5A for b in data[middle:middle + 16])
    archive = tmp_path / "d2.tar.gz"
    archive.write_bytes(bytes(data))
    with pytest.raises(SourceError, match="damaged or incomplete"):
        acquire(str(archive), "unused", PIN_A, tmp_path / "cache")
    assert _unpacked(tmp_path / "cache") == []


def test_tar_whose_listing_stops_early_is_refused(tmp_path):
    """An uncompressed tar (no CRC) with a damaged second header: tarfile lists one member and
    stops silently; the bytes after it are not padding."""
    archive = tmp_path / "d2.tar"
    with tarfile.open(archive, "w", format=tarfile.PAX_FORMAT, pax_headers={"comment": PIN_A}) as tf:
        for name in ("d2/a.py", "d2/b.py", "d2/c.py"):
            info = tarfile.TarInfo(name)
            info.size = 600
            tf.addfile(info, io.BytesIO(b"x" * 600))
    data = bytearray(archive.read_bytes())
    second = data.index(b"d2/b.py")
    data[second + 148:second + 156] = b"garbage!"  # the header checksum field
    archive.write_bytes(bytes(data))
    with pytest.raises(SourceError, match="not in its listing"):
        acquire(str(archive), "unused", PIN_A, tmp_path / "cache")


def test_unpacked_tree_must_match_the_listing(tmp_path, monkeypatch):
    archive = _git_style_archive(tmp_path / "d2.tar.gz", files=3)
    real_unpack = source_mod._unpack

    def lossy(arch, into):  # as if a file went missing on the way (e.g. a full disk ignored)
        real_unpack(arch, into)
        next(into.rglob("mod1.py")).unlink()

    monkeypatch.setattr(source_mod, "_unpack", lossy)
    with pytest.raises(SourceError, match=r"did not give the tree its listing names .*missing detectron2/mod1\.py"):
        acquire(str(archive), "unused", PIN_A, tmp_path / "cache")
    monkeypatch.undo()
    src = acquire(str(archive), "unused", PIN_A, tmp_path / "cache")
    Path(src.path, "detectron2", "mod2.py").unlink()  # the cached tree damaged later: unpacked again
    again = acquire(str(archive), "unused", PIN_A, tmp_path / "cache")
    assert Path(again.path, "detectron2", "mod2.py").is_file() and again.tree == src.tree


# --- an archive or folder that claims the pinned commit must have the pinned tree ------------

def _plain_tar(path, files, commit=PIN_A):
    """An uncompressed tar (no checksum at all): only the pinned tree hash can tell a changed byte."""
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT, pax_headers={"comment": commit}) as tf:
        for name, data in files:
            info = tarfile.TarInfo(f"detectron2/{name}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


FILES = [("setup.py", b"setup()\n"), ("detectron2/__init__.py", b"__version__ = '0.6'\n")]


def test_a_plain_tar_with_one_byte_flipped_is_not_the_pinned_commit(tmp_path):
    good = _plain_tar(tmp_path / "good.tar", FILES)
    pin_tree = acquire(str(good), "unused", PIN_A, tmp_path / "c0").tree
    assert acquire(str(good), "unused", PIN_A, tmp_path / "cache", pin_tree=pin_tree).pinned
    bad = tmp_path / "bad.tar"
    data = bytearray(good.read_bytes())
    at = data.index(b"__version__")
    data[at] ^= 0x01     # '_' -> '^': same size, same listing, no checksum in a tar
    bad.write_bytes(bytes(data))
    with pytest.raises(SourceError, match=r"claims the pinned commit 02b5c4e295e9, but its content .* is not the "
                                          r"pinned commit's .*--allow-unpinned"):
        acquire(str(bad), "unused", PIN_A, tmp_path / "cache", pin_tree=pin_tree)
    allowed = acquire(str(bad), "unused", PIN_A, tmp_path / "cache", allow_unpinned=True, pin_tree=pin_tree)
    assert not allowed.pinned and "NOT the pinned tree" in allowed.how and allowed.identity.startswith("tree:")


def test_a_folder_claiming_the_pin_is_checked_before_it_is_copied(tmp_path):
    folder = tmp_path / "d2"
    for name, data in FILES:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    (folder / MARKER).write_text(PIN_A + "\n")
    pin_tree = source_mod.pinned_content(folder)      # the marker is not part of the pinned tree
    assert acquire(str(folder), "unused", PIN_A, tmp_path / "cache", pin_tree=pin_tree).pinned
    (folder / "setup.py").write_bytes(b"setup()  \n")
    with pytest.raises(SourceError, match="claims the pinned commit"):
        acquire(str(folder), "unused", PIN_A, tmp_path / "cache2", pin_tree=pin_tree)
    assert not (tmp_path / "cache2").exists()


@pytest.mark.filterwarnings("ignore:Duplicate name")
@pytest.mark.parametrize("suffix", [".tar", ".zip"])
def test_an_archive_listing_a_member_twice_is_refused(tmp_path, suffix):
    archive = tmp_path / f"d2{suffix}"
    twice = [*FILES, ("setup.py", b"import os; os.system('x')\n")]
    if suffix == ".tar":
        _plain_tar(archive, twice)
    else:
        with zipfile.ZipFile(archive, "w") as zf:
            zf.comment = PIN_A.encode()
            for name, data in twice:
                zf.writestr(f"detectron2/{name}", data)
    with pytest.raises(SourceError, match="member detectron2/setup.py is listed twice"):
        acquire(str(archive), "unused", PIN_A, tmp_path / "cache")


def test_the_matrix_pins_the_tree_of_its_commit(matrix):
    assert len(matrix.d2_tree) == 64 and int(matrix.d2_tree, 16) >= 0
