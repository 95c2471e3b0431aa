"""Settings resolve in one place: CLI flag > DPDEPLOY_* env var > invoke.yaml > default.

Unknown keys in invoke.yaml's ``dpdeploy:`` section and unknown ``DPDEPLOY_*`` environment
variables are errors (with a "did you mean"), except the variables in ``NOT_SETTINGS``, which
other parts of dpdeploy and its tests read.
"""
from __future__ import annotations

import difflib
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
    "force_smoke": False,  # setup: run the smoke tests even when they passed on this env, build and weights
    "force_env": False,  # env step: remove and recreate the env instead of repairing drifted pins in place
    "offline": False,    # setup: deploy from --bundle only; nothing is fetched (pip index off, no downloads)
    "bundle": "",        # setup --offline: the archive `invoke bundle` wrote (wheels, source, weights, manifest)
}


# DPDEPLOY_* variables that are not settings: read by the smoke suite (set by
# dpdeploy/inference/smoke.py), docker/compose.yml, and tests / CI (docs/ci.md).
NOT_SETTINGS = frozenset({
    "DPDEPLOY_PLAN_JSON", "DPDEPLOY_MODEL", "DPDEPLOY_WEIGHTS", "DPDEPLOY_SMOKE_OUT",
    "DPDEPLOY_WEIGHTS_DIR",
    "DPDEPLOY_TEST_D2_SOURCE", "DPDEPLOY_TEST_D2_ENV", "DPDEPLOY_TEST_TORCH_ENV",
    "DPDEPLOY_TEST_ANSIBLE_STEPS", "DPDEPLOY_TEST_ROOTFS_CACHE", "DPDEPLOY_TEST_STORAGE_ROOT",
    "DPDEPLOY_TEST_RAY_ENV", "DPDEPLOY_RAY_KILL_ONCE",   # tests/test_ray_env.py: the cpu-ray env, ray_batch's test hook
})
# name -> (check, what it must be), for values a type alone does not rule out.
BOUNDS = {
    "max_jobs": (lambda v: v >= 0, "a number of jobs >= 0 (0 = from RAM and cores)"),
    "weights_timeout": (lambda v: v > 0, "a number of seconds > 0"),
}


class SettingsError(ValueError):
    """A setting that is unknown or has a bad value; the message is one line."""


def _did_you_mean(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def check_env(env: Mapping[str, str]) -> None:
    """Refuse DPDEPLOY_* variables that are neither a setting nor in NOT_SETTINGS."""
    settings = [ENV_PREFIX + name.upper() for name in DEFAULTS]
    for var in sorted(env):
        if var.startswith(ENV_PREFIX) and var not in settings and var not in NOT_SETTINGS:
            hint = _did_you_mean(var, settings + sorted(NOT_SETTINGS))
            raise SettingsError(f"unknown environment variable {var}{hint}; "
                                f"next: unset it (settings: {', '.join(settings)})")


def check_config(config: Any, origin: str = "invoke.yaml") -> Mapping[str, Any]:
    """The ``dpdeploy:`` config section, refused unless a mapping of known settings."""
    if config is None:
        return {}
    if not isinstance(config, Mapping):
        raise SettingsError(f"{origin}: dpdeploy: must be a mapping of settings (e.g. `dpdeploy: {{profile: cpu}}`), "
                            f"got {type(config).__name__} {config!r}; next: fix or remove it")
    for key in config:
        if key not in DEFAULTS:
            raise SettingsError(f"{origin}: unknown setting dpdeploy.{key}{_did_you_mean(str(key), list(DEFAULTS))}; "
                                f"next: remove it (settings: {', '.join(DEFAULTS)})")
        if config[key] is not None:
            _coerce(key, config[key], origin)
    return config


def check_config_file(path: str | os.PathLike, missing_ok: bool = True) -> None:
    """Validate an invoke config file (YAML, or JSON by its suffix) before invoke merges it: invoke
    itself would stop with a traceback on a YAML error, a non-mapping ``dpdeploy:`` or a mapping
    given for a setting. A ``.py`` config file is not checked."""
    import json

    import yaml

    from dpdeploy.fsutil import read_user_text

    path = Path(path)
    if path.suffix == ".py" or (missing_ok and not path.exists()):
        return
    text = read_user_text(path, SettingsError, "invoke config")
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise SettingsError(f"{path}: not valid JSON: {exc}; next: fix or remove it") from None
    else:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark else ""
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise SettingsError(f"{path}: not valid YAML{where}: {problem}; next: fix or remove it") from None
    if data is None:
        return
    if not isinstance(data, Mapping):
        raise SettingsError(f"{path}: must be a YAML mapping, got {type(data).__name__}; next: fix or remove it")
    check_config(data.get("dpdeploy"), str(path))


CONFIG_SUFFIXES = ("yaml", "yml", "json")


def check_config_files(project: str | os.PathLike, runtime: str | os.PathLike | None = None,
                       user: str | os.PathLike = "~/.invoke", system: str | os.PathLike = "/etc/invoke") -> None:
    """Every config file invoke reads for a run: the system and user files, the project's beside
    tasks.py and the runtime file (``invoke -f FILE`` / INVOKE_RUNTIME_CONFIG), which must exist."""
    for base in (system, user, Path(project) / "invoke"):
        for suffix in CONFIG_SUFFIXES:
            check_config_file(Path(f"{Path(base).expanduser()}.{suffix}"))
    if runtime:
        check_config_file(Path(runtime).expanduser(), missing_ok=False)


def check_project_file(folder: str | os.PathLike) -> None:
    """Validate ``invoke.yaml`` / ``invoke.yml`` / ``invoke.json`` in ``folder``."""
    for suffix in CONFIG_SUFFIXES:
        check_config_file(Path(folder) / f"invoke.{suffix}")


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
    """``value`` as the type of the setting's default; a value of another kind (a list or mapping,
    a number for a true/false setting, a fraction or true/false for a number) is refused."""
    default = DEFAULTS[name]
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, str):
            low = value.strip().lower()
            if low in {"1", "true", "yes", "on"}:
                return True
            if low in {"0", "false", "no", "off", ""}:
                return False
        raise SettingsError(f"{name} from {origin}: expected true/false, got {value!r}; next: set it to true or false")
    if isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        else:
            try:
                number = int(value.strip()) if isinstance(value, str) else None
            except ValueError:
                number = None
            if number is None:
                raise SettingsError(f"{name} from {origin}: expected a whole number, got {value!r}; "
                                    "next: give an integer") from None
        check, what = BOUNDS.get(name, (lambda v: True, ""))
        if not check(number):
            raise SettingsError(f"{name} from {origin}: must be {what}, got {number}")
        return number
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise SettingsError(f"{name} from {origin}: expected a string, got {type(value).__name__} {value!r}; "
                            "next: give one value (quote it in YAML)")
    return str(value)


def resolve(
    flags: Optional[Mapping[str, Any]] = None,
    env: Mapping[str, str] = os.environ,
    config: Optional[Mapping[str, Any]] = None,
) -> Settings:
    """Merge the four sources; ``flags`` values of None mean "not given". Unknown flags,
    config keys and DPDEPLOY_* variables are refused."""
    flags = flags or {}
    config = check_config(config)
    check_env(env)
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
