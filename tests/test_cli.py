"""The tasks as a user runs them: real `invoke` subprocesses."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import FIXTURES, ROOT

INVOKE = [sys.executable, "-m", "invoke"]


def invoke(*args, env=None, check=True):
    full_env = {**os.environ, "NO_COLOR": "1", **(env or {})}
    proc = subprocess.run([*INVOKE, *args], cwd=ROOT, capture_output=True, text=True, env=full_env, timeout=120)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_plan_h100_json():
    out = json.loads(invoke("plan", "--facts", str(FIXTURES / "facts" / "h100.json"), "--json").stdout)
    assert out["profile"] == "cu130" and "9.0" in out["torch_cuda_arch_list"]
    assert {"max_jobs", "reasons", "steps"} <= set(out)
    assert [s["name"] for s in out["steps"]][0] == "env"


def test_plan_v100_not_cu130():
    out = json.loads(invoke("plan", "--facts", str(FIXTURES / "facts" / "v100.json"), "--json").stdout)
    assert out["profile"] != "cu130" and "cu130" in out["rejected"]


def test_refusal_exit_code_and_message():
    proc = invoke("plan", "--facts", str(FIXTURES / "facts" / "driver470.json"), check=False)
    assert proc.returncode == 2
    assert "no profile fits this host" in proc.stderr and "next:" in proc.stderr
    proc = invoke("plan", "--facts", str(FIXTURES / "facts" / "driver470.json"), "--json", check=False)
    assert proc.returncode == 2 and json.loads(proc.stdout)["error"] == "no profile fits this host"


def test_facts_json_on_this_host(tmp_path):
    out = json.loads(invoke("facts", "--json", env={"DPDEPLOY_HOME": str(tmp_path)}).stdout)
    assert out["system"] == "Linux" and isinstance(out["gpus"], list)
    if not out["gpus"]:
        assert out["notes"], "a GPU-less host must say why no GPU was found"


def test_env_var_setting_reaches_the_plan(tmp_path):
    out = json.loads(invoke("plan", "--facts", str(FIXTURES / "facts" / "nogpu.json"), "--json",
                            env={"DPDEPLOY_PROFILE": "cu130", "DPDEPLOY_HOME": str(tmp_path)}).stdout)
    assert out["profile"] == "cu130" and out["prefix"] == str(tmp_path / "envs" / "cu130")


def test_bad_facts_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "facts.json"
    bad.write_text("[]")
    proc = invoke("plan", "--facts", str(bad), check=False)
    assert proc.returncode == 2 and "must hold a JSON object" in proc.stderr


def test_setup_dry_changes_nothing(tmp_path):
    proc = invoke("setup", "--dry", "--facts", str(FIXTURES / "facts" / "nogpu.json"),
                  env={"DPDEPLOY_HOME": str(tmp_path)}, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Plan" in proc.stdout and "==> env" in proc.stdout
    assert all(f"==> {step}" in proc.stdout for step in ("env", "build", "weights", "smoke", "report"))
    assert proc.stdout.count("    planned (") == 5, proc.stdout
    assert not any(Path(tmp_path).iterdir()), "a dry run must not write state"


def test_setup_on_a_small_disk_is_refused_by_the_env_step_with_exit_2(tmp_path):
    """The plan only warns (an env already made still runs); creating one is refused before it starts."""
    facts = json.loads((FIXTURES / "facts" / "nogpu.json").read_text())
    small = tmp_path / "small.json"
    small.write_text(json.dumps({**facts, "disk_free_mib": 3000, "disk_path": str(tmp_path)}))
    home = tmp_path / "home"
    proc = invoke("setup", "--facts", str(small), "--only", "env", env={"DPDEPLOY_HOME": str(home)}, check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "2.9 GiB free at" in proc.stdout and "not enough disk to create" in proc.stdout
    assert not (home / "envs").exists()


def refused_in_one_line(proc, text):
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert text in proc.stderr, proc.stderr


def project_with_invoke_yaml(tmp_path, text):
    """A copy of tasks.py with its own invoke.yaml (invoke reads the one beside the tasks file)."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "tasks.py").write_text((ROOT / "tasks.py").read_text())
    (project / "invoke.yaml").write_text(text)
    return project


@pytest.mark.parametrize("text, why", [
    ("dpdeploy: 5\n", "dpdeploy: must be a mapping of settings"),
    ("dpdeploy:\n  profile: [cu130\n", "not valid YAML at line 3"),
    ("dpdeploy:\n  max_job: 4\n", "unknown setting dpdeploy.max_job (did you mean max_jobs?)"),
])
def test_broken_invoke_yaml_is_one_line_exit_2(tmp_path, text, why):
    project = project_with_invoke_yaml(tmp_path, text)
    proc = invoke("-r", str(project), "plan", "--facts", str(FIXTURES / "facts" / "nogpu.json"),
                  env={"PYTHONPATH": str(ROOT), "DPDEPLOY_HOME": str(tmp_path / "home")}, check=False)
    refused_in_one_line(proc, why)


def test_unknown_dpdeploy_variable_says_did_you_mean(tmp_path):
    proc = invoke("plan", "--facts", str(FIXTURES / "facts" / "nogpu.json"),
                  env={"DPDEPLOY_PROFIL": "cpu", "DPDEPLOY_HOME": str(tmp_path)}, check=False)
    refused_in_one_line(proc, "unknown environment variable DPDEPLOY_PROFIL (did you mean DPDEPLOY_PROFILE?)")


def test_bad_values_are_one_line_exit_2(tmp_path):
    nogpu = str(FIXTURES / "facts" / "nogpu.json")
    env = {"DPDEPLOY_HOME": str(tmp_path)}
    refused_in_one_line(invoke("plan", "--facts", nogpu, "--max-jobs", "-3", env=env, check=False),
                        "max_jobs from --max-jobs: must be a number of jobs >= 0")
    matrix = tmp_path / "matrix.yml"
    text = (ROOT / "env" / "matrix.yml").read_text()
    matrix.write_text(re.sub(r"mem_per_job_mib: \d+", "mem_per_job_mib: 0", text))
    refused_in_one_line(invoke("plan", "--facts", nogpu, env={**env, "DPDEPLOY_MATRIX": str(matrix)}, check=False),
                        "build.mem_per_job_mib: must be a positive number of MiB, got 0")
    facts = json.loads((FIXTURES / "facts" / "nogpu.json").read_text())
    facts["pythons"] = "/usr/bin/python3"
    bad = tmp_path / "facts.json"
    bad.write_text(json.dumps(facts))
    refused_in_one_line(invoke("plan", "--facts", str(bad), env=env, check=False),
                        "pythons must be a list, got str")


def test_setup_only_refuses_an_unknown_step_and_plan_records_the_plan_only(tmp_path):
    facts = str(FIXTURES / "facts" / "nogpu.json")
    bad = invoke("setup", "--only", "env,biuld", "--facts", facts, env={"DPDEPLOY_HOME": str(tmp_path)}, check=False)
    assert bad.returncode == 2 and "unknown step biuld" in bad.stderr and not any(tmp_path.iterdir())
    done = invoke("setup", "--only", "plan", "--json", "--facts", facts, env={"DPDEPLOY_HOME": str(tmp_path)}, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    [run] = (tmp_path / "runs").iterdir()
    assert json.loads(done.stdout)["steps"] == [] and (run / "plan.json").is_file()


def test_dry_commands_are_shell_quoted(tmp_path, capsys):
    """What --dry prints can be pasted into a shell: `TORCH_CUDA_ARCH_LIST=7.5;8.0` split at `;`
    would run `8.0` as a command."""
    import shlex

    from dpdeploy.cli import docker

    argv = ["buildah", "bud", "--build-arg", "TORCH_CUDA_ARCH_LIST=7.5;8.0+PTX", "-t", "x y"]
    docker._report({"engine": "buildah", "command": argv, "status": "planned"}, False)
    [line] = [ln for ln in capsys.readouterr().out.splitlines() if "TORCH_CUDA_ARCH_LIST" in ln]
    assert shlex.split(line) == argv
    prov = invoke("provision", "--dry", "--extra-vars", 'densepose_setup_steps=["env"] x=a b',
                  env={"DPDEPLOY_HOME": str(tmp_path)})
    assert 'densepose_setup_steps=["env"] x=a b' in shlex.split(prov.stdout)


@pytest.mark.skipif(not __import__("shutil").which("buildah"), reason="needs buildah (apt install buildah)")
def test_docker_build_uses_the_plans_max_jobs(tmp_path):
    import shlex

    proc = invoke("docker.build", "--dry", "--engine", "buildah", "--ca", "none", env={"DPDEPLOY_HOME": str(tmp_path)})
    plan = json.loads(invoke("plan", "--json").stdout)   # this host's: the image is built here
    [line] = [ln for ln in proc.stdout.splitlines() if "MAX_JOBS=" in ln]
    assert f"MAX_JOBS={plan['max_jobs']}" in shlex.split(line)


@pytest.mark.parametrize("args, flag", [
    (("plan", "--max-jobs", "abc"), "--max-jobs abc"),
    (("predict", "in", "--prefix", "P", "--weights", "synthetic", "--device", "cpu", "--max-size", "abc"),
     "--max-size abc"),
    (("docker.build", "--dry", "--max-jobs", "2.5"), "--max-jobs 2.5"),
])
def test_an_int_flag_given_a_non_number_is_one_line_exit_2(tmp_path, args, flag):
    proc = invoke(*args, env={"DPDEPLOY_HOME": str(tmp_path)}, check=False)
    refused_in_one_line(proc, f"{flag}: not a whole number")


def test_runtime_and_user_config_files_are_checked_like_the_project_file(tmp_path):
    nogpu = str(FIXTURES / "facts" / "nogpu.json")
    runtime = tmp_path / "run.yaml"
    runtime.write_text("dpdeploy:\n  matrix: {a: 1}\n")
    env = {"DPDEPLOY_HOME": str(tmp_path / "home")}
    refused_in_one_line(invoke("-f", str(runtime), "plan", "--facts", nogpu, env=env, check=False),
                        f"matrix from {runtime}: expected a string, got dict")
    runtime.write_text("dpdeploy: 5\n")
    refused_in_one_line(invoke("plan", "--facts", nogpu, env={**env, "INVOKE_RUNTIME_CONFIG": str(runtime)},
                               check=False), f"{runtime}: dpdeploy: must be a mapping")
    (tmp_path / ".invoke.yaml").write_text("dpdeploy:\n  max_jobs: true\n")
    refused_in_one_line(invoke("plan", "--facts", nogpu, env={**env, "HOME": str(tmp_path)}, check=False),
                        f"max_jobs from {tmp_path / '.invoke.yaml'}: expected a whole number")


@pytest.mark.parametrize("args, why", [
    (("verify", "--junit", "{file}/x.xml"), "--junit {file}/x.xml: its folder {file}: is a file"),
    (("verify", "--junit", "{tmp}"), "--junit {tmp}: is a folder, not a file"),
    (("report", "--out", "{file}"), "--out {file}: is a file, not a folder"),
    (("report", "--out", "{file}/sub"), "--out {file}/sub: {file} is a file, so the folder cannot be created"),
    (("report", "--out", "/proc/x"), "--out /proc/x: cannot write in /proc"),
])
def test_an_output_path_that_cannot_be_written_is_refused_before_acting(tmp_path, args, why):
    file = tmp_path / "a file"
    file.write_text("keep")
    home = tmp_path / "home"
    fill = {"file": file, "tmp": tmp_path}
    facts = ["--facts", str(FIXTURES / "facts" / "nogpu.json")] if args[0] == "verify" else []
    proc = invoke(*[a.format(**fill) for a in args], *facts, env={"DPDEPLOY_HOME": str(home)}, check=False)
    refused_in_one_line(proc, why.format(**fill))
    assert file.read_text() == "keep" and sorted(p.name for p in tmp_path.iterdir()) == ["a file"]
