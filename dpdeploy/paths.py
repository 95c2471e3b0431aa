"""Where the checkout's files are: the one place that knows the repository layout."""
from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
ROOT = PACKAGE.parent                      # the checkout (tasks.py, env/, docker/, ansible/)
MATRIX = ROOT / "env" / "matrix.yml"
LOCKS = ROOT / "env" / "locks"
SMOKE_TESTS = ROOT / "smoke_tests"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
ANSIBLE = ROOT / "ansible"
REQUIREMENTS = ROOT / "requirements"
SIGNATURES = PACKAGE / "diagnose" / "signatures.yml"
INENV = PACKAGE / "inenv"
TESTEXT_SOURCE = PACKAGE / "build" / "testext_src"
OS_PACKAGES = ROOT / "env" / "os-packages.yml"
