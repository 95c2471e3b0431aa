"""dpdeploy's own tiny torch extension: proves the build/toolchain path without detectron2.

One C++ op (``add_one``, CPU) and, with FORCE_CUDA=1, one CUDA kernel (``add_one_cuda``).
Built exactly like detectron2: ``pip wheel --no-build-isolation`` with the compile env.
"""
import os

from setuptools import setup
from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension

cuda = os.environ.get("FORCE_CUDA") == "1"
ext = (CUDAExtension if cuda else CppExtension)(
    "dpdeploy_testext._C",
    ["csrc/ops.cpp"] + (["csrc/ops_cuda.cu"] if cuda else []),
    define_macros=[("WITH_CUDA", None)] if cuda else [],
)
setup(
    name="dpdeploy-testext",
    version="0.1",
    packages=["dpdeploy_testext"],
    ext_modules=[ext],
    cmdclass={"build_ext": BuildExtension},
)
