#!/usr/bin/env python3
"""Fresh box, only python3: make the tools venv (.venv) from the hashed lock, then run invoke.

    python3 bootstrap.py setup      # == invoke setup
    python3 bootstrap.py test       # == invoke test

Re-running is instant: the venv is stamped with the lock's hash, written last.
"""
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
# The runtime image sets DPDEPLOY_TOOLS_LOCK=requirements/runtime.txt: invoke and what running
# needs, a subset of the same pins (docker/Dockerfile).
LOCK = ROOT / os.environ.get("DPDEPLOY_TOOLS_LOCK", "requirements/tools.txt")
STAMP = VENV / ".dpdeploy-tools-stamp"
# pip itself first: the pip that `python3 -m venv` seeds is the OS's (Debian 12: 23.0.1), and
# pip < 23.3 refuses a hashed lock whose packages ask for an extra (weasyprint -> fonttools[woff]).
PIP_LOCK = ROOT / "requirements" / "pip.txt"


def fail(what: str, why: str, next_step: str) -> "None":
    sys.exit(f"bootstrap: {what}\n  why: {why}\n  next: {next_step}")


def ensure_venv() -> Path:
    digest = hashlib.sha256(PIP_LOCK.read_bytes() + LOCK.read_bytes()).hexdigest()
    if STAMP.is_file() and STAMP.read_text().strip() == digest:
        return VENV
    if sys.version_info < (3, 10):
        fail(f"Python {sys.version.split()[0]} is too old for dpdeploy's tools",
             "the tools venv needs Python >= 3.10", "run bootstrap.py with python3.10 or newer")
    print(f"bootstrap: creating the tools venv at {VENV} from {LOCK.relative_to(ROOT)} ...", flush=True)
    shutil.rmtree(VENV, ignore_errors=True)
    made = subprocess.run([sys.executable, "-m", "venv", str(VENV)])
    if made.returncode != 0:
        shutil.rmtree(VENV, ignore_errors=True)
        fail("python3 -m venv failed", "the venv module or ensurepip is missing",
             "install it (Debian/Ubuntu: sudo apt install python3-venv) and run this again")
    pip = [str(VENV / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    for lock in (PIP_LOCK, LOCK):
        if subprocess.run([*pip, "--require-hashes", "--only-binary=:all:", "-r", str(lock)]).returncode != 0:
            fail("installing the tools failed", f"pip could not install {lock.name} (see its output above)",
                 "check network access to PyPI (or PIP_INDEX_URL / PIP_CERT behind a proxy) and run this again")
    STAMP.write_text(digest + "\n")  # last: a half-made venv is never taken for done
    return VENV


def main() -> None:
    venv = ensure_venv()
    invoke = venv / "bin" / "invoke"
    os.chdir(ROOT)
    os.execv(str(invoke), [str(invoke), *sys.argv[1:]])


if __name__ == "__main__":
    main()
