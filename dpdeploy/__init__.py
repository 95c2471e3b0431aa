"""dpdeploy: reproducible DensePose deployments (facts -> plan -> steps -> record -> report)."""

__version__ = "0.1.0"
