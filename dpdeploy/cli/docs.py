"""`invoke docs`: regenerate the generated docs (CLI reference, configuration table)."""
from invoke import Collection, Exit, FilesystemLoader, task

from dpdeploy import paths
from dpdeploy.cli import docgen


def _namespace() -> Collection:
    """The task collection as invoke itself loads it from the checkout's tasks.py."""
    module, _ = FilesystemLoader(start=str(paths.ROOT)).load("tasks")
    return Collection.from_module(module)


@task(help={"check": "Change nothing; exit 1 if a generated doc is stale (for CI)."})
def docs(c, check: bool = False) -> None:
    """Regenerate docs/cli.md and docs/configuration.md from the tasks and settings."""
    ns = _namespace()
    if check:
        old = docgen.stale(ns)
        if old:
            print(f"stale: {', '.join(old)}\n  next: run `invoke docs` and commit the result")
            raise Exit(code=1)
        print("generated docs are up to date")
        return
    changed = docgen.write(ns)
    print("\n".join(f"wrote {p}" for p in changed) or "generated docs are up to date")
