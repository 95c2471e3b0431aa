// One CUDA kernel: out = x + 1 (float32, contiguous).
#include <torch/extension.h>

__global__ void add_one_kernel(const float* x, float* out, int64_t n) {
  int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (i < n) out[i] = x[i] + 1.0f;
}

torch::Tensor add_one_cuda(const torch::Tensor& x) {
  auto out = torch::empty_like(x);
  int64_t n = x.numel();
  add_one_kernel<<<(n + 255) / 256, 256>>>(x.data_ptr<float>(), out.data_ptr<float>(), n);
  return out;
}
