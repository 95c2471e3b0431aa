"""The steps of a deployment (env, build, weights, smoke, report), each idempotent, and the
pipeline that runs them in plan order for ``invoke setup`` and every single-step task."""
