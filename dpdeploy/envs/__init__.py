"""Environments: hash-pinned locks (reading and generating) and conda rendering."""
