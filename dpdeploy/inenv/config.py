"""DensePose's model config, inside the env: detectron2's defaults + add_densepose_config + the yaml.

Shared by the predict worker and the synthetic-checkpoint builder.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence


def load(config_path: str | Path, overrides: Sequence[str] = ()):
    """DensePose's config: detectron2's defaults + add_densepose_config + the model's yaml."""
    from densepose import add_densepose_config
    from detectron2.config import get_cfg

    cfg = get_cfg()
    add_densepose_config(cfg)
    cfg.merge_from_file(str(config_path))
    if overrides:
        cfg.merge_from_list(list(overrides))
    return cfg
