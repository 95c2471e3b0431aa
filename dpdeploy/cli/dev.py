"""`invoke test`: the project's own unit tests."""
import shlex
import sys

from invoke import task


@task(help={"args": "Extra pytest arguments, e.g. '-k plan -x'."})
def test(c, args: str = "") -> None:
    """Run the unit and integration tests in tests/ (pytest)."""
    c.run(f"{shlex.quote(sys.executable)} -m pytest tests --durations=15 {args}", pty=False)
