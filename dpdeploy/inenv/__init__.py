"""Scripts run by the deployed env's Python (stdlib + what the env has), not by dpdeploy's."""
