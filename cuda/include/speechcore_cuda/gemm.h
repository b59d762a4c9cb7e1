// Matrix products through cuBLASLt: y[m, n] = x[m, k] * w[n, k]^T (+ bias[n]) (+ y), inputs
// and output of one DataType, float32 accumulation (float32 inputs: plain FP32, no TF32, so
// the float32 GPU path can match the CPU path token for token).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "speechcore_cuda/common.h"

namespace speechcore::cuda {

class GemmRunner {
 public:
  // workspace_bytes: cuBLASLt scratch, allocated once here.
  explicit GemmRunner(size_t workspace_bytes = size_t(32) << 20);
  ~GemmRunner();
  GemmRunner(const GemmRunner&) = delete;
  GemmRunner& operator=(const GemmRunner&) = delete;

  // x: [m, k] (row stride k), w: [n, k], bias: [n] or null (same DataType), y: [m, n].
  // accumulate: y += x w^T (+ bias) (the residual add fused into the product).
  void linear(DataType dt, const void* x, const void* w, const void* bias, void* y, int64_t m, int64_t n,
              int64_t k, bool accumulate, cudaStream_t stream);

  // The same product with a float32 output (logits of a float16/bfloat16 model), no bias.
  void linear_f32_out(DataType dt, const void* x, const void* w, float* y, int64_t m, int64_t n, int64_t k,
                      cudaStream_t stream);

  // Number of (shape, type) plans cached so far (each chosen once by cuBLASLt's heuristic).
  size_t cached_plans() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace speechcore::cuda
