"""Inference from the tools venv: weights, sample photos, inputs, the predict parent, the smoke suite."""
