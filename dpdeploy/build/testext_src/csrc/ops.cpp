// add_one on the CPU; add_one_cuda (ops_cuda.cu) when built WITH_CUDA.
#include <torch/extension.h>

torch::Tensor add_one(const torch::Tensor& x) { return x + 1; }

#ifdef WITH_CUDA
torch::Tensor add_one_cuda(const torch::Tensor& x);
#endif

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("add_one", &add_one, "x + 1 (C++)");
#ifdef WITH_CUDA
  m.def("add_one_cuda", &add_one_cuda, "x + 1 (CUDA kernel)");
#endif
}
