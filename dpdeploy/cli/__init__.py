"""Invoke tasks, one module per command; ``tasks.py`` assembles them."""
