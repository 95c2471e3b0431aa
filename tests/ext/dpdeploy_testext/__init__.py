"""dpdeploy's test extension (see tests/ext/setup.py)."""
