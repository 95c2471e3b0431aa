"""dpdeploy's test extension (see dpdeploy/build/testext_src/setup.py)."""
