"""`invoke docs`: regenerate the generated docs (CLI reference, configuration table)."""
from invoke import Exit, task

from dpdeploy.cli import docgen as docs_mod


@task(help={"check": "Change nothing; exit 1 if a generated doc is stale (for CI)."})
def docs(c, check: bool = False) -> None:
    """Regenerate docs/cli.md and docs/configuration.md from the tasks and settings."""
    from tasks import ns  # the assembled collection (tasks.py imports this module)

    if check:
        old = docs_mod.stale(ns)
        if old:
            print(f"stale: {', '.join(old)}\n  next: run `invoke docs` and commit the result")
            raise Exit(code=1)
        print("generated docs are up to date")
        return
    changed = docs_mod.write(ns)
    print("\n".join(f"wrote {p}" for p in changed) or "generated docs are up to date")
