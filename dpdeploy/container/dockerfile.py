"""docker/Dockerfile's build-arg defaults, rendered from env/matrix.yml (pure).

The block between ``BEGIN_MARK`` and ``END_MARK`` in the Dockerfile is generated here from the
matrix's ``docker`` section and the chosen profile; `invoke docker.render` rewrites it and
tests/test_docker.py fails when the committed file differs (drift).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping, Optional

from dpdeploy import paths
from dpdeploy.plan.matrix import Matrix, MatrixError

DOCKERFILE = paths.DOCKERFILE
BEGIN_MARK = "# BEGIN build args rendered from env/matrix.yml by `invoke docker.render`; do not edit"
END_MARK = "# END build args"
_BLOCK = re.compile(re.escape(BEGIN_MARK) + r"\n.*?" + re.escape(END_MARK) + r"\n", re.S)


@dataclass(frozen=True)
class DockerSection:
    """The matrix's ``docker`` section, validated."""

    default_profile: str
    python: str
    base_images: Mapping[str, str]

    @classmethod
    def from_matrix(cls, matrix: Matrix) -> "DockerSection":
        node = matrix.raw.get("docker")
        where = f"{matrix.path}: docker"
        if not isinstance(node, Mapping):
            raise MatrixError(f"{where}: missing; it names the base images the Dockerfile is built from")
        images = node.get("base_images")
        if not isinstance(images, Mapping) or not images:
            raise MatrixError(f"{where}.base_images: expected a mapping profile -> image")
        for name, image in images.items():
            matrix.profile(name)  # raises for an unknown profile
            if not isinstance(image, str) or not image.strip():
                raise MatrixError(f"{where}.base_images.{name}: expected an image reference, got {image!r}")
        default = str(node.get("default_profile", ""))
        if default not in images:
            raise MatrixError(f"{where}.default_profile: {default!r} has no entry in base_images")
        return cls(default, str(node.get("python", "")), dict(images))

    def base_image(self, profile: str) -> str:
        try:
            return self.base_images[profile]
        except KeyError:
            raise MatrixError(f"no docker base image for profile {profile!r}; env/matrix.yml docker.base_images "
                              f"has: {', '.join(self.base_images)}") from None


def build_args(matrix: Matrix, profile: Optional[str] = None) -> dict[str, str]:
    """The Dockerfile's ARG defaults for ``profile`` (default: docker.default_profile), in order."""
    section = DockerSection.from_matrix(matrix)
    chosen = matrix.profile(profile or section.default_profile)
    return {
        "BASE_IMAGE": section.base_image(chosen.name),
        "PROFILE": chosen.name,
        "TORCH_VERSION": chosen.torch,
        "TORCHVISION_VERSION": chosen.torchvision,
        "CUDA_VERSION": chosen.cuda or "",
        "TORCH_CUDA_ARCH_LIST": chosen.arch_list if chosen.is_cuda else "",
        "DETECTRON2_COMMIT": matrix.d2_commit,
    }


def render_block(args: Mapping[str, str]) -> str:
    """The ARG lines between the markers (values quoted: arch lists hold ';')."""
    lines = [BEGIN_MARK, *(f'ARG {name}="{value}"' for name, value in args.items()), END_MARK]
    return "\n".join(lines) + "\n"


def render(text: str, args: Mapping[str, str]) -> str:
    """``text`` (a Dockerfile) with its marked block replaced by the rendered one."""
    if len(_BLOCK.findall(text)) != 1:
        raise ValueError(f"the Dockerfile must hold exactly one block from {BEGIN_MARK!r} to {END_MARK!r}")
    return _BLOCK.sub(lambda _: render_block(args), text)


def drift(text: str, args: Mapping[str, str]) -> list[str]:
    """Lines that differ between the committed block and the rendered one ([] = in sync)."""
    found = _BLOCK.search(text)
    have = found.group(0).splitlines() if found else []
    want = render_block(args).splitlines()
    return [f"- {line}" for line in have if line not in want] + [f"+ {line}" for line in want if line not in have]
