"""The `weights` step: cached/verified weights, or a loud skip when they cannot be reached.

Unreachable weights (no network to the zoo, 404, timeout) and weights that cannot be verified
(no sha256 in the matrix, trust_on_first_use off) must not stop `invoke setup`: the smoke step
then runs the pipeline check with a synthetic checkpoint. A wrong file (checksum, not a
checkpoint) or a full disk is a failure.
"""
from __future__ import annotations

from dpdeploy.inference import weights as w
from dpdeploy.ui.transfer import transfer_bar
from dpdeploy.records.run import StepResult
from dpdeploy.steps.context import StepContext

UNAVAILABLE = "real weights unavailable ({reason}): smoke tests will run the pipeline check with a synthetic checkpoint"


def run(ctx: StepContext) -> StepResult:
    spec = w.ModelSpec.from_matrix(ctx.matrix)
    source = ctx.settings.weights_from
    command = f"invoke weights --model {spec.name}" + (f" --from {source}" if source else "")
    if ctx.dry:
        return StepResult("weights", "planned", command, output=f"{spec.name} from {source or spec.url}")
    if ctx.bundle is not None and ctx.bundle.weights is None:   # offline: never the zoo
        message = UNAVAILABLE.format(reason="offline, and the bundle holds no weights")
        ctx.echo(f"    !!! {message}")
        return StepResult("weights", "skipped", command, output=message, detail={"model": spec.name, "weights": None})
    try:
        with transfer_bar(spec.name) as progress:
            got = w.fetch(ctx.plan.home, spec, source, ctx.settings.weights_timeout, progress,
                          ctx.settings.trust_on_first_use)
    except w.WeightsError as err:
        if err.unavailable or err.kind == "untrusted":
            message = UNAVAILABLE.format(reason=f"{err.what}: {err.why}")
            ctx.echo(f"    !!! {message}")
            ctx.echo(f"    !!! for real weights: {err.next_step}")
            return StepResult("weights", "skipped", command, output=message,
                              detail={"model": spec.name, "weights": None, "error": err.to_dict()})
        return StepResult("weights", "failed", command, output=str(err), detail={"error": err.to_dict()})
    status = "up-to-date" if got.action == "cached" else "done"
    if got.trust == "tofu":
        ctx.echo(f"    !!! {got.model}: TRUSTED ON FIRST USE (no sha256 in env/matrix.yml): not verified")
    return StepResult("weights", status, command,
                      output=f"{got.model}: {got.action}, sha256 {got.sha256} ({got.trust})",
                      detail={"model": got.model, "weights": got.to_dict()})
