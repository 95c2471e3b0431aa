"""`invoke weights`: fetch (or import) checksum-verified DensePose weights into the cache."""
import sys

from invoke import Exit, task

from dpdeploy.ui import render
from dpdeploy.inference import weights as w
from dpdeploy.ui.transfer import transfer_bar
from dpdeploy.cli import common


TOFU_WARNING = ("WARNING: {model} was TRUSTED ON FIRST USE: env/matrix.yml pins no sha256 for it, so this file "
                "was NOT verified against the published one; its hash in {manifest} only detects later changes. "
                "Do not copy that hash into env/matrix.yml.")


def _text(got: w.Fetched, spec: w.ModelSpec) -> str:
    pinned = got.trust == "pinned"
    return "\n".join([
        f"weights: {got.model} {got.action}", f"  file    {got.path}", f"  source  {got.source or spec.url}",
        f"  size    {got.size} bytes" + (" (env/matrix.yml: ok)" if spec.size is not None else ""),
        f"  md5     {got.md5} (zoo prefix {spec.md5_prefix}: ok)",
        f"  sha256  {got.sha256}" + (" (env/matrix.yml: ok)" if pinned else " (trusted on first use, unverified)"),
        "  trust   " + ("pinned: size and sha256 match env/matrix.yml" if pinned
                         else "TOFU: recorded in the cache manifest"),
    ])


@task(help={
    "model": "A model from env/matrix.yml's models.entries (default: models.default).",
    "from_": "Import a hand-copied .pkl (a file or a folder holding it) or download from this URL "
             "(a .pkl URL or a mirror of the zoo layout); default the weights_from setting, else the zoo.",
    "timeout": "Seconds to wait for the server per read (default: the weights_timeout setting, 20).",
    "trust_on_first_use": "Accept a model whose env/matrix.yml entry has no sha256 WITHOUT verifying it: its hash "
                          "is recorded in the cache manifest as trust-on-first-use (default: the "
                          "trust_on_first_use setting, off).",
    "json": "Print the result (or the error) as JSON.",
    "no_wait": common.NO_WAIT_HELP,
})
def weights(c, model: str = "", from_: str = "", timeout: int = 0, trust_on_first_use: bool = False,
            json: bool = False, no_wait: bool = False) -> None:
    """Fetch checksum-verified DensePose weights into the cache (resumes, reuses, imports)."""
    with common.user_errors(json):
        s = common.settings(c, weights_from=from_, weights_timeout=timeout, trust_on_first_use=trust_on_first_use)
        matrix = common.load_matrix(s)
    try:
        spec = w.ModelSpec.from_matrix(matrix, model)
        with common.user_errors(json), common.state_lock(s, no_wait=no_wait, quiet=json), \
                transfer_bar(spec.name, enabled=not json) as progress:
            got = w.fetch(s.home_path, spec, s.weights_from, s.weights_timeout, progress, s.trust_on_first_use)
    except w.WeightsError as err:
        print(render.to_json(err.to_dict()) if json else render.error_text(err),
              file=sys.stdout if json else sys.stderr)
        raise Exit(code=2 if err.kind in {"model", "source", "untrusted"} else 1) from None
    if got.trust == "tofu":
        print(TOFU_WARNING.format(model=got.model, manifest=got.path + ".json"), file=sys.stderr)
    print(render.to_json(got) if json else _text(got, spec))
