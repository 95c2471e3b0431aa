"""Fleets: the Ansible driver and the project archive the roles unpack on each host."""
