"""One minimum-driver rule (dpdeploy.plan.driver.new_enough), asked by the plan, by doctor and
(through ``python3 -m dpdeploy.plan.driver``) by Ansible's nvidia_driver role: all agree."""
import json
import subprocess
import sys

import pytest

from dpdeploy.diagnose.checks import driver_check
from dpdeploy.plan import driver
from dpdeploy.plan.resolve import PlanError, resolve
from dpdeploy.plan.settings import resolve as settings

from .conftest import ROOT, facts_fixture


@pytest.mark.parametrize("installed, floor, ok", [
    ("580.65.06", "580.65.06", True),
    ("580.65.07", "580.65.06", True),
    ("580.65.05", "580.65.06", False),
    ("580.9.1", "580.65.06", False),          # numeric, not string, comparison
    ("590.44.01", "580.65.06", True),
    ("535.104.05", "580.65.06", False),
    ("1000.1", "580.65.06", True),
    ("580", "580.65.06", True),               # a bare series: its newest release
    ("570", "580.65.06", False),
    ("", "580.65.06", False),
])
def test_new_enough(installed, floor, ok):
    assert driver.new_enough(installed, floor) is ok


DRIVERS = ["535.104.05", "580.65.05", "580.65.06", "580.95.05", "590.44.01"]


@pytest.mark.parametrize("version", DRIVERS)
def test_plan_doctor_and_the_ansible_answer_agree(matrix, tmp_path, version):
    floor = matrix.profile("cu130").min_driver
    fits = driver.new_enough(version, floor)
    s = settings({"home": str(tmp_path), "profile": "cu130"}, env={})
    facts = facts_fixture("h100", driver_version=version)
    try:
        resolve(facts, matrix, s)
        planned = True
    except PlanError as err:
        planned = False
        assert "driver" in err.rejected["cu130"]
    doctor = driver_check(facts, resolve(facts_fixture("h100"), matrix, s), matrix)
    answer = subprocess.run([sys.executable, "-m", "dpdeploy.plan.driver", "cu130", "--installed", version],
                            cwd=ROOT, capture_output=True, text=True, check=True)
    assert planned is fits
    assert (doctor.status == "ok") is fits
    assert json.loads(answer.stdout)["ok"] is fits


def test_the_answer_for_ansible(matrix):
    none = driver.requirement(matrix, "cu130", installed="")
    assert none["ok"] is False and "no NVIDIA driver installed" in none["reason"]
    old = driver.requirement(matrix, "cu130", installed="535.104.05", branch="570")
    assert old["ok"] is False and old["branch"] == 570 and old["branch_ok"] is False
    assert "needs driver >= 580.65.06" in old["reason"]
    assert driver.requirement(matrix, "cu130", branch="590")["branch_ok"] is True
    with pytest.raises(ValueError, match="not a number"):
        driver.requirement(matrix, "cu130", branch="r580")
