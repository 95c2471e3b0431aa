"""Settings resolve in one place: CLI flag > DPDEPLOY_* env var > invoke.yaml > default."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

from dpdeploy.plan.matrix import DEFAULT_PATH as DEFAULT_MATRIX

ENV_PREFIX = "DPDEPLOY_"


def default_home(env: Mapping[str, str] = os.environ) -> str:
    """The state root, outside any checkout so clones share caches."""
    base = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return str(Path(base) / "dpdeploy")


# name -> default. Empty string / 0 mean "let the plan decide".
DEFAULTS: dict[str, Any] = {
    "home": "",          # state root (env prefixes, caches, run records); "" = XDG data dir
    "matrix": str(DEFAULT_MATRIX),  # the version matrix; default env/matrix.yml in the checkout
    "profile": "auto",   # a profile name from the matrix, or auto
    "prefix": "",        # env location; "" = <home>/envs/<profile>
    "python": "",        # interpreter for the env; "" = first probed one the profile accepts
    "arch_list": "",     # TORCH_CUDA_ARCH_LIST override, e.g. "8.0;9.0+PTX"; "" = GPUs present
    "max_jobs": 0,       # compiler jobs; 0 = from RAM and cores
    "facts": "",         # recorded facts JSON instead of probing
    "weights_from": "",  # weights source: "" = model zoo; a zoo mirror URL, a .pkl URL, a file or folder
    "weights_timeout": 20,  # seconds a weights download may wait for the server per read
    "trust_on_first_use": False,  # accept weights the matrix pins no sha256 for, unverified (recorded)
    "conda": False,      # env step: install env/conda-lock-<profile>.yml with conda-lock instead of pip
    "source": "",        # detectron2 source: URL, git repo/checkout, archive or dir; "" = the matrix's repo
    "allow_unpinned": False,  # build a detectron2 source whose commit is not the matrix's pin (recorded)
}


class SettingsError(ValueError):
    """A setting with a value of the wrong type."""


@dataclass(frozen=True)
class Settings:
    values: Mapping[str, Any]
    origins: Mapping[str, str] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        try:
            return self.values[name]
        except KeyError:
            raise AttributeError(name) from None

    @property
    def home_path(self) -> Path:
        return Path(self.values["home"] or default_home()).expanduser()


def _coerce(name: str, value: Any, origin: str) -> Any:
    default = DEFAULTS[name]
    if isinstance(default, bool):
        if isinstance(value, str):
            low = value.strip().lower()
            if low in {"1", "true", "yes", "on"}:
                return True
            if low in {"0", "false", "no", "off", ""}:
                return False
            raise SettingsError(f"{name} from {origin}: expected true/false, got {value!r}")
        return bool(value)
    if isinstance(default, int):
        try:
            return int(value)
        except (TypeError, ValueError):
            raise SettingsError(f"{name} from {origin}: expected an integer, got {value!r}") from None
    return "" if value is None else str(value)


def resolve(
    flags: Optional[Mapping[str, Any]] = None,
    env: Mapping[str, str] = os.environ,
    config: Optional[Mapping[str, Any]] = None,
) -> Settings:
    """Merge the four sources; ``flags`` values of None mean "not given"."""
    flags = flags or {}
    config = config or {}
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for name, default in DEFAULTS.items():
        env_name = ENV_PREFIX + name.upper()
        if flags.get(name) is not None:
            values[name], origins[name] = flags[name], f"--{name.replace('_', '-')}"
        elif env.get(env_name) is not None:
            values[name], origins[name] = env[env_name], env_name
        elif config.get(name) is not None and config.get(name) != default:
            values[name], origins[name] = config[name], "invoke.yaml"
        else:
            values[name], origins[name] = default, "default"
        values[name] = _coerce(name, values[name], origins[name])
    unknown = sorted(set(flags) - set(DEFAULTS))
    if unknown:
        raise SettingsError(f"unknown settings: {', '.join(unknown)}")
    return Settings(values, origins)
