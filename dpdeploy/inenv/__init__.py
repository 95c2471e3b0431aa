"""Modules that run inside the deployed DensePose env.

Only ``model``, ``predict_worker`` and ``synthetic`` import torch / detectron2 / densepose, and
``video`` PyAV (lazily, so their pure parts stay testable without them); ``images`` needs only
Pillow and numpy; ``pipeline`` (load ahead, batches, finish behind) only the standard library.
Nothing outside this package imports any of them. ``check_detectron2`` is a script the
build step runs in the env.
"""
