"""The matrix validates itself; settings resolve flag > env > invoke.yaml > default."""
import copy
import json
import re

import pytest
import yaml

from dpdeploy.plan import matrix as matrix_mod
from dpdeploy.host.facts import Facts, FactsError
from dpdeploy.plan.matrix import MatrixError
from dpdeploy.plan.settings import NOT_SETTINGS, SettingsError, check_config_files, check_project_file, resolve

from .conftest import FIXTURES, ROOT


def test_real_matrix_loads(matrix):
    assert set(matrix.profiles) >= {"cu130", "cu126", "cpu"}
    cu130 = matrix.profile("cu130")
    assert (cu130.torch, cu130.torchvision, cu130.cuda, cu130.index) == ("2.14.1", "0.29.1", "13.0", "pypi")
    assert matrix.d2_commit == "02b5c4e295e990042a714712c21dc79b731e8833"
    assert matrix.max_gcc("13.0.88") == 15
    assert matrix.model_url(matrix.default_model) == (
        "https://dl.fbaipublicfiles.com/densepose/densepose_rcnn_R_50_FPN_s1x/165712039/model_final_162be9.pkl")


def _broken(mutate):
    data = yaml.safe_load(open(matrix_mod.DEFAULT_PATH))
    data = copy.deepcopy(data)
    mutate(data)
    return data


@pytest.mark.parametrize("mutate, key", [
    (lambda d: d["detectron2"].pop("commit"), "detectron2.commit: missing"),
    (lambda d: d["detectron2"].update(commit="main"), "detectron2.commit"),
    (lambda d: d["profiles"]["cu130"].update(torch="latest"), "profiles.cu130.torch"),
    (lambda d: d["profiles"]["cu130"].update(min_driver=None), "profiles.cu130.min_driver: missing"),
    (lambda d: d["profiles"]["cu130"].update(arch_list="7.0;9.0"), "profiles.cu130.arch_list"),
    (lambda d: d["profiles"]["cu130"].update(index="http://insecure"), "profiles.cu130.index"),
    (lambda d: d["profiles"]["cu126"].pop("compute_capability"), "profiles.cu126.compute_capability"),
    (lambda d: d["auto"].update(gpu=["cu130", "nope"]), "auto"),
    (lambda d: d["auto"].update(gpu=["cpu"]), "auto.gpu"),
    (lambda d: d["nvcc_max_gcc"].pop("13.0"), "profiles.cu130.cuda"),
    (lambda d: d["build"].update(mem_per_job_mib="lots"), "build.mem_per_job_mib"),
    (lambda d: d["build"].update(mem_per_job_mib=0), "build.mem_per_job_mib: must be a positive number of MiB"),
    (lambda d: d["build"].update(mem_reserve_mib=-1), "build.mem_reserve_mib: must be 0 or more"),
    (lambda d: d["models"].update(default="nope"), "models.default"),
    (lambda d: d["models"]["entries"]["densepose_rcnn_R_50_FPN_s1x"].update(md5_prefix="xyz"), "md5_prefix"),
    (lambda d: d["samples"]["astronaut"].update(sha256="abc"), "samples.astronaut.sha256"),
    (lambda d: d["models"]["entries"]["densepose_rcnn_R_50_FPN_s1x"].update(sha256="a" * 64, size=0),
     "models.entries.densepose_rcnn_R_50_FPN_s1x.size: must be a positive number of bytes"),
    (lambda d: d["models"]["entries"]["densepose_rcnn_R_50_FPN_s1x"].update(size="big"),
     "models.entries.densepose_rcnn_R_50_FPN_s1x.size: must be int"),
    (lambda d: d["models"]["entries"]["densepose_rcnn_R_50_FPN_s1x"].update(sha256="a" * 64),
     "pin sha256 and size together"),
])
def test_broken_matrix_names_the_key(mutate, key):
    with pytest.raises(MatrixError) as err:
        matrix_mod.parse(_broken(mutate), "env/matrix.yml")
    assert key in str(err.value)


def test_matrix_file_errors(tmp_path):
    with pytest.raises(MatrixError, match="not found"):
        matrix_mod.load(tmp_path / "missing.yml")
    bad = tmp_path / "bad.yml"
    bad.write_text("profiles: [unclosed\n")
    with pytest.raises(MatrixError, match="not valid YAML"):
        matrix_mod.load(bad)


def test_unknown_profile(matrix):
    with pytest.raises(MatrixError, match="unknown profile 'cu999'"):
        matrix.profile("cu999")


def test_settings_precedence():
    env = {"DPDEPLOY_PROFILE": "cu126", "DPDEPLOY_MAX_JOBS": "3"}
    config = {"profile": "cpu", "max_jobs": 5, "prefix": "/from/yaml"}
    s = resolve({"profile": "cu130"}, env=env, config=config)
    assert (s.profile, s.origins["profile"]) == ("cu130", "--profile")
    assert (s.max_jobs, s.origins["max_jobs"]) == (3, "DPDEPLOY_MAX_JOBS")
    assert (s.prefix, s.origins["prefix"]) == ("/from/yaml", "invoke.yaml")
    assert (s.arch_list, s.origins["arch_list"]) == ("", "default")


def test_settings_type_errors():
    with pytest.raises(SettingsError, match="max_jobs from DPDEPLOY_MAX_JOBS: expected a whole number"):
        resolve({}, env={"DPDEPLOY_MAX_JOBS": "many"})
    with pytest.raises(SettingsError, match="unknown settings: colour"):
        resolve({"colour": "red"}, env={})


def test_home_default_is_outside_the_checkout():
    s = resolve({}, env={})
    assert s.home_path.name == "dpdeploy" and "share" in str(s.home_path)


def test_facts_file_errors(tmp_path):
    with pytest.raises(FactsError, match="not found"):
        Facts.load(tmp_path / "none.json")
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(FactsError, match="not JSON"):
        Facts.load(tmp_path / "x.json")
    (tmp_path / "y.json").write_text('{"os_id": "debian", "colour": 1}')
    with pytest.raises(FactsError, match="unknown facts keys: colour"):
        Facts.load(tmp_path / "y.json")


def test_unknown_settings_say_did_you_mean():
    with pytest.raises(SettingsError, match=r"unknown setting dpdeploy\.max_job \(did you mean max_jobs\?\)"):
        resolve({}, env={}, config={"max_job": 3})
    with pytest.raises(SettingsError, match=r"DPDEPLOY_WEIGHT_FROM \(did you mean DPDEPLOY_WEIGHTS_FROM\?\)"):
        resolve({}, env={"DPDEPLOY_WEIGHT_FROM": "x"})
    with pytest.raises(SettingsError, match="dpdeploy: must be a mapping"):
        resolve({}, env={}, config=5)


def test_non_setting_dpdeploy_variables_are_allowed():
    s = resolve({}, env={**dict.fromkeys(NOT_SETTINGS, "x"), "DPDEPLOY_HOME": "/h", "PATH": "/bin"})
    assert s.home == "/h"
    assert {"DPDEPLOY_TEST_D2_SOURCE", "DPDEPLOY_TEST_D2_ENV", "DPDEPLOY_PLAN_JSON", "DPDEPLOY_WEIGHTS"} <= NOT_SETTINGS


def test_every_test_variable_is_allowed():
    """An invoke command run with a test's DPDEPLOY_TEST_* variable set (tests/test_ray_engines.py passes
    its whole environment to invoke) must not be refused as an unknown setting."""
    import re

    from dpdeploy.inenv.ray_batch import KILL_ONCE_ENV

    used = {m for path in (ROOT / "tests").glob("*.py") for m in re.findall(r"DPDEPLOY_TEST_[A-Z0-9_]+", path.read_text())}
    assert "DPDEPLOY_TEST_RAY_ENV" in used and used | {KILL_ONCE_ENV} <= NOT_SETTINGS, used - NOT_SETTINGS


@pytest.mark.parametrize("name, value, why", [
    ("max_jobs", "-3", "must be a number of jobs >= 0"),
    ("weights_timeout", "0", "must be a number of seconds > 0"),
])
def test_settings_out_of_range(name, value, why):
    with pytest.raises(SettingsError, match=why):
        resolve({}, env={f"DPDEPLOY_{name.upper()}": value})


@pytest.mark.parametrize("text, why", [
    ("dpdeploy:\n  profile: [cu130\n", "not valid YAML at line 3"),
    ("dpdeploy: 5\n", "dpdeploy: must be a mapping"),
    ("- a\n", "must be a YAML mapping"),
    ("dpdeploy:\n  profle: cpu\n", "did you mean profile"),
])
def test_project_invoke_yaml_is_checked(tmp_path, text, why):
    (tmp_path / "invoke.yaml").write_text(text)
    with pytest.raises(SettingsError, match=why):
        check_project_file(tmp_path)


def test_project_invoke_yaml_that_is_fine(tmp_path):
    check_project_file(tmp_path)  # none
    (tmp_path / "invoke.yaml").write_text("run:\n  echo: true\ndpdeploy:\n  profile: cpu\n")
    check_project_file(tmp_path)


@pytest.mark.parametrize("change, why", [
    ({"gpus": "none"}, "gpus must be a list, got str"),
    ({"mem_total_mib": "lots"}, "mem_total_mib must be an integer, got str"),
    ({"cpu_count": True}, "cpu_count must be an integer, got bool"),
    ({"gpus": [{"index": 0, "name": "x", "compute_capability": 9.0, "memory_mib": 1}]},
     r"gpus\[0\]\.compute_capability must be a string, got float"),
    ({"cuda": {"nvcc": "nvcc", "home": "/c", "has_library_headers": True}}, "cuda.nvcc must be an object"),
    ({"pythons": [{"path": "/p"}]}, r"missing facts keys: pythons\[0\]\.version"),
])
def test_facts_with_wrong_types_are_named(tmp_path, change, why):
    data = json.loads((FIXTURES / "facts" / "h100.json").read_text())
    data.update(change)
    (tmp_path / "f.json").write_text(json.dumps(data))
    with pytest.raises(FactsError, match=why):
        Facts.load(tmp_path / "f.json")


@pytest.mark.parametrize("config, why", [
    ({"home": ["a", "b"]}, "home from invoke.yaml: expected a string, got list"),
    ({"matrix": {"a": 1}}, "matrix from invoke.yaml: expected a string, got dict"),
    ({"profile": True}, "profile from invoke.yaml: expected a string, got bool"),
    ({"trust_on_first_use": 3}, "trust_on_first_use from invoke.yaml: expected true/false, got 3"),
    ({"max_jobs": 2.7}, "max_jobs from invoke.yaml: expected a whole number, got 2.7"),
    ({"max_jobs": True}, "max_jobs from invoke.yaml: expected a whole number, got True"),
    ({"weights_timeout": False}, "weights_timeout from invoke.yaml: expected a whole number, got False"),
])
def test_settings_of_the_wrong_kind_are_refused(config, why):
    with pytest.raises(SettingsError, match=re.escape(why)):
        resolve({}, env={}, config=config)


def test_settings_of_the_right_kind_pass():
    s = resolve({}, env={"DPDEPLOY_MAX_JOBS": " 4 "},
                config={"trust_on_first_use": True, "python": 3.11, "conda": "yes"})
    assert (s.max_jobs, s.trust_on_first_use, s.python, s.conda) == (4, True, "3.11", True)


@pytest.mark.parametrize("name, text, why", [
    ("invoke.yaml", b"dpdeploy:\n  profile: caf\xe9\n", "is not UTF-8 text"),
    ("invoke.yaml", b"dpdeploy:\n  matrix: {a: 1}\n", "matrix from {path}: expected a string, got dict"),
    ("invoke.json", b'{"dpdeploy": 5}', "{path}: dpdeploy: must be a mapping"),
])
def test_config_files_are_checked_with_their_own_name(tmp_path, name, text, why):
    (tmp_path / name).write_bytes(text)
    with pytest.raises(SettingsError, match=re.escape(why.format(path=tmp_path / name))):
        check_project_file(tmp_path)


def test_user_and_runtime_config_files_are_checked(tmp_path):
    (tmp_path / "project").mkdir()
    (tmp_path / ".invoke.yaml").write_text("dpdeploy: 5\n")
    with pytest.raises(SettingsError, match=re.escape(f"{tmp_path / '.invoke.yaml'}: dpdeploy: must be a mapping")):
        check_config_files(tmp_path / "project", user=tmp_path / ".invoke", system=tmp_path / "none")
    (tmp_path / ".invoke.yaml").unlink()
    runtime = tmp_path / "run.yml"
    runtime.write_text("dpdeploy:\n  profile: [cpu\n")
    with pytest.raises(SettingsError, match=re.escape(f"{runtime}: not valid YAML")):
        check_config_files(tmp_path / "project", runtime, user=tmp_path / ".invoke", system=tmp_path / "none")
    with pytest.raises(SettingsError, match="invoke config file not found"):
        check_config_files(tmp_path / "project", tmp_path / "gone.yml", user=tmp_path / ".invoke",
                           system=tmp_path / "none")


@pytest.mark.parametrize("content", [None, b"\xff\xfe{}"])
def test_a_matrix_or_facts_file_that_is_a_folder_or_not_utf8_is_refused(tmp_path, content):
    target = tmp_path / "f"
    target.mkdir() if content is None else target.write_bytes(content)
    why = "is a folder" if content is None else "is not UTF-8 text"
    with pytest.raises(MatrixError, match=f"matrix file {target} {why}"):
        matrix_mod.load(target)
    with pytest.raises(FactsError, match=f"facts file {target} {why}"):
        Facts.load(target)
