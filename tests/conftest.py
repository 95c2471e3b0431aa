import json
from pathlib import Path

import pytest

from dpdeploy import matrix as matrix_mod
from dpdeploy.facts import Facts

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def facts_fixture(name: str, **changes) -> Facts:
    data = json.loads((FIXTURES / "facts" / f"{name}.json").read_text())
    data.update(changes)
    return Facts.from_dict(data)


@pytest.fixture(scope="session")
def matrix():
    return matrix_mod.load()
