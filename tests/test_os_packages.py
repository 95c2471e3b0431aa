"""One OS packages table (env/os-packages.yml); every consumer installs exactly its part of it."""
import re

import pytest

from dpdeploy import paths
from dpdeploy.plan import os_packages
from dpdeploy.plan.matrix import MatrixError

TABLE = os_packages.load()


def dockerfile_stage_packages(stage: str) -> list[str]:
    """The packages `apt-get install` names in one stage of docker/Dockerfile."""
    text = paths.DOCKERFILE.read_text()
    body = re.split(r"^FROM .*$", text, flags=re.M)
    names = re.findall(r"^FROM .* AS (\w+)$", text, flags=re.M)
    section = body[names.index(stage) + 1]
    found = re.findall(r"apt-get install -y --no-install-recommends ([^\\\n&]+)", section)
    return [p for line in found for p in line.split()]


def test_ansible_vars_are_rendered_from_the_table():
    for rel, text in os_packages.generated().items():
        assert (paths.ROOT / rel).read_text() == text, f"{rel} is stale: run `invoke docs`"
    assert "libglib2.0-0t64" in TABLE.ansible_vars("Ubuntu-24.04") and "libglib2.0-0 " in TABLE.ansible_vars("Debian-12")


def stages() -> list[str]:
    return re.findall(r"^FROM .* AS (\w+)$", paths.DOCKERFILE.read_text(), flags=re.M)


def test_the_dockerfile_stages_install_their_part():
    assert sorted(dockerfile_stage_packages("base")) == sorted(TABLE.names("image"))
    assert sorted(dockerfile_stage_packages("env")) == sorted(TABLE.names("builder"))
    # the other stages build on those two and install nothing more: no compilers in the runtime image
    assert {s: dockerfile_stage_packages(s) for s in stages() if s not in ("base", "env")} == \
        {s: [] for s in stages() if s not in ("base", "env")}


def test_ci_installs_its_part():
    text = (paths.ROOT / ".ci" / "run").read_text()
    found = [p for group in re.findall(r"need\+=\(([^)]*)\)", text) for p in group.split()]
    assert sorted(found) == sorted(TABLE.names("ci"))


def test_every_package_says_why_and_for_whom(tmp_path):
    bad = tmp_path / "t.yml"
    bad.write_text("schema: 1\ndistros: [Debian-12]\npackages:\n  git: {for: [hots], why: x}\n")
    with pytest.raises(MatrixError, match="unknown hots"):
        os_packages.load(bad)
    bad.write_text("schema: 1\ndistros: [Debian-12]\npackages:\n  git: {for: [host]}\n")
    with pytest.raises(MatrixError, match="needs `why`"):
        os_packages.load(bad)
