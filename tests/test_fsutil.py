"""fsutil: a folder swapped in whole; the configs the build step installs into the env."""
import os

import pytest

from dpdeploy.build import wheels as builder
from dpdeploy.fsutil import replace_tree


def test_replace_tree_swaps_the_whole_folder_and_leaves_no_temp(tmp_path):
    new = tmp_path / "new"
    (new / "sub").mkdir(parents=True)
    (new / "sub" / "a.yaml").write_text("a")
    dest = tmp_path / "out" / "configs"
    dest.mkdir(parents=True)
    (dest / "stale.yaml").write_text("old")
    replace_tree(new, dest)
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*")) == ["sub", "sub/a.yaml"]
    assert os.listdir(dest.parent) == ["configs"]


def test_a_failed_copy_keeps_the_old_tree(tmp_path):
    dest = tmp_path / "configs"
    dest.mkdir()
    (dest / "kept.yaml").write_text("old")
    with pytest.raises(OSError):
        replace_tree(tmp_path / "missing", dest)
    assert (dest / "kept.yaml").read_text() == "old" and os.listdir(tmp_path) == ["configs"]


def test_install_configs_puts_densepose_configs_in_the_env(tmp_path):
    densepose = tmp_path / "src" / "projects" / "DensePose"
    (densepose / "configs" / "cse").mkdir(parents=True)
    (densepose / "configs" / "Base-DensePose-RCNN-FPN.yaml").write_text("MODEL: {}")
    prefix = tmp_path / "env"
    dest = builder.install_configs(densepose, prefix)
    assert dest == prefix / "share" / "densepose" / "configs"
    assert (dest / "Base-DensePose-RCNN-FPN.yaml").read_text() == "MODEL: {}" and (dest / "cse").is_dir()
    with pytest.raises(builder.BuildError, match="no DensePose configs"):
        builder.install_configs(tmp_path / "src", prefix)
