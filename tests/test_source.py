"""Source acquisition and commit verification, with real git repositories and archives."""
import io
import subprocess
import tarfile
import zipfile
from pathlib import Path

import pytest

from dpdeploy.build.source import MARKER, SourceError, acquire, kind_of

GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.com", "PATH": "/usr/bin:/bin:/usr/local/bin"}


def git(repo, *args):
    return subprocess.run(["git", *args], cwd=repo, env=GIT_ENV, check=True, capture_output=True, text=True).stdout.strip()


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
