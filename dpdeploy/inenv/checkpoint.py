"""Read a detectron2 ``.pkl`` checkpoint without executing code, and check its shape.

detectron2's checkpointer loads ``.pkl`` files with plain ``pickle.load``, which runs whatever
callables the file names. This module unpickles with an allow-list of what a model-zoo
checkpoint holds (containers, scalars, numpy arrays and dtypes, OrderedDict) and refuses any
other global by its ``module.name`` before calling it. Standard library + numpy only: it runs
in the tools venv (``invoke weights``) and inside the env (the predict worker) alike.
"""
from __future__ import annotations

import collections
import pickle
from pathlib import Path
from typing import Any

import numpy as np

# numpy pickles arrays as _reconstruct(ndarray, shape, dtype) + __setstate__ (protocol 5:
# _frombuffer(data, dtype, shape, order)); numpy 1 names the modules numpy.core.*, numpy 2
# numpy._core.* (the same functions).
_RECONSTRUCT = np.ndarray.__reduce__(np.zeros(1))[0]
_FROMBUFFER = np.zeros(1).__reduce_ex__(5)[0]


def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    """How protocol 2 pickles bytes (``_codecs.encode(str, 'latin1')``); no other codec."""
    if not isinstance(text, str) or encoding.replace("-", "").lower() != "latin1":
        raise CheckpointError(f"it calls _codecs.encode with {encoding!r}, not latin1 (refused)")
    return text.encode("latin1")


ALLOWED = {
    ("_codecs", "encode"): _latin1_bytes,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy.core.numeric", "_frombuffer"): _FROMBUFFER,
    ("numpy._core.numeric", "_frombuffer"): _FROMBUFFER,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}
# Parameter-name prefixes every DensePose R-CNN checkpoint has (detectron2's GeneralizedRCNN
# backbone, DensePose's roi_heads.densepose_head / densepose_predictor modules).
REQUIRED_PREFIXES = ("backbone.", "roi_heads.densepose_head.", "roi_heads.densepose_predictor.")


class CheckpointError(Exception):
    """The file is not a checkpoint this tool will hand to detectron2."""


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED[(module, name)]
        except KeyError:
            raise CheckpointError(f"it names {module}.{name}, which a weights checkpoint never holds "
                                  "(refused without calling it)") from None

    def persistent_load(self, pid: Any) -> Any:
        raise CheckpointError("it uses pickle persistent ids (a torch.save file, not a .pkl checkpoint)")


def load(path: str | Path) -> Any:
    """The unpickled data; only allow-listed globals are ever resolved."""
    try:
        with open(path, "rb") as fh:
            return _Unpickler(fh, encoding="latin1").load()
    except CheckpointError:
        raise
    except Exception as exc:  # a damaged pickle can fail in many ways; none of them ran code
        raise CheckpointError(f"it is not a readable pickle ({type(exc).__name__}: {exc})") from None


def check(data: Any) -> dict[str, tuple[int, ...]]:
    """Parameter name -> shape of a detectron2-format DensePose checkpoint, or CheckpointError."""
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        raise CheckpointError("it is not a detectron2 checkpoint (a dict whose 'model' is a dict of arrays)")
    shapes = {}
    for name, value in data["model"].items():
        if not isinstance(name, str) or not isinstance(value, np.ndarray) or value.dtype.hasobject:
            raise CheckpointError(f"model entry {name!r} is a {type(value).__name__}, not a numeric array")
        shapes[name] = value.shape
    missing = [p for p in REQUIRED_PREFIXES if not any(n.startswith(p) for n in shapes)]
    if missing:
        raise CheckpointError(f"no parameters named {', '.join(p + '*' for p in missing)}: not a DensePose model "
                              f"({len(shapes)} parameters)")
    return shapes


def check_file(path: str | Path) -> dict[str, tuple[int, ...]]:
    """``check(load(path))`` with the file named in the error."""
    try:
        return check(load(path))
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None


def mismatches(expected: dict[str, tuple[int, ...]], found: dict[str, tuple[int, ...]], shown: int = 4) -> str:
    """What keeps checkpoint tensors ``found`` (name -> shape) from fitting a model's parameters
    ``expected``: missing names and other shapes ("" when it fits; extra names are allowed, as
    detectron2's checkpointer allows them)."""
    missing = sorted(n for n in expected if n not in found)
    wrong = sorted(f"{n} {tuple(found[n])} where the model has {tuple(shape)}"
                   for n, shape in expected.items() if n in found and tuple(found[n]) != tuple(shape))
    parts = []
    if missing:
        parts.append(f"{len(missing)} of {len(expected)} parameters missing ({', '.join(missing[:shown])}"
                     + (", ..." if len(missing) > shown else "") + ")")
    if wrong:
        parts.append(f"{len(wrong)} of another shape ({'; '.join(wrong[:shown])}" + ("; ..." if len(wrong) > shown else "")
                     + ")")
    return "; ".join(parts)
