"""`invoke weights`: fetch (or import) checksum-verified DensePose weights into the cache."""
import sys

from invoke import Exit, task

from dpdeploy.ui import render
from dpdeploy.inference import weights as w
from dpdeploy.ui.transfer import transfer_bar
from dpdeploy.cli import common


def _text(got: w.Fetched, spec: w.ModelSpec) -> str:
    lines = [f"weights: {got.model} {got.action}", f"  file    {got.path}", f"  source  {got.source or spec.url}",
             f"  size    {got.size} bytes", f"  md5     {got.md5} (zoo prefix {spec.md5_prefix}: ok)",
             f"  sha256  {got.sha256}" + (" (env/matrix.yml: ok)" if spec.sha256 else "")]
    if not spec.sha256:
        lines.append(f"  note    env/matrix.yml has no sha256 for {got.model} yet: record sha256: {got.sha256}")
    return "\n".join(lines)


@task(help={
    "model": "A model from env/matrix.yml's models.entries (default: models.default).",
    "from_": "Import a hand-copied .pkl (a file or a folder holding it) or download from this URL "
             "(a .pkl URL or a mirror of the zoo layout); default the weights_from setting, else the zoo.",
    "timeout": "Seconds to wait for the server per read (default: the weights_timeout setting, 20).",
    "json": "Print the result (or the error) as JSON.",
})
def weights(c, model: str = "", from_: str = "", timeout: int = 0, json: bool = False) -> None:
    """Fetch checksum-verified DensePose weights into the cache (resumes, reuses, imports)."""
    with common.user_errors(json):
        s = common.settings(c, weights_from=from_, weights_timeout=timeout)
        matrix = common.load_matrix(s)
    try:
        spec = w.ModelSpec.from_matrix(matrix, model)
        with transfer_bar(spec.name, enabled=not json) as progress:
            got = w.fetch(s.home_path, spec, s.weights_from, s.weights_timeout, progress)
    except w.WeightsError as err:
        print(render.to_json(err.to_dict()) if json else render.error_text(err), file=sys.stdout if json else sys.stderr)
        raise Exit(code=2 if err.kind in {"model", "source"} else 1) from None
    print(render.to_json(got) if json else _text(got, spec))
