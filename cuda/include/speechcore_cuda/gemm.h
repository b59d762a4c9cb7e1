// Matrix products through cuBLASLt: y[m, n] = x[m, k] * w[n, k]^T (+ bias[n]) (+ y), inputs
// and output of one DataType, float32 accumulation (float32 inputs: plain FP32, no TF32, so
// the float32 GPU path can match the CPU path token for token).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "speechcore_cuda/common.h"

namespace speechcore::cuda {

// Skinny product for decode steps (m <= kGemvMaxRows token rows): y = x w^T (+ bias) (+ y), one
// warp per output feature streaming its weight row once (memory-bandwidth bound, where general
// GEMM tilings are not). y_float32: y is float32 (logits; no bias then), else of type dt.
// gelu: y = gelu(x w^T + bias) (exact erf GELU before the residual add, if any).
// Float32 accumulation, one rounding of the result; only enqueues work on `stream`.
constexpr int kGemvMaxRows = 8;
// Rows up to which GemmRunner uses gemv() by default. Measured on the H200 (large-v3 decoder,
// bf16, CUDA graphs): batch 1 1.62 ms/step with gemv vs 1.97 with cuBLASLt; batch 8 3.15 vs
// 2.45 ms/step (at 8 rows the x re-reads dominate), so only the smallest batches take it.
constexpr int kGemvDefaultRows = 2;

// Optional fusions of a gemv() for decode steps.
struct GemvFusion {
  // Layer norm of x fused in (ln_gamma non-null): the product uses, for each row of x,
  // (x - mean) / sqrt(var + ln_eps) * ln_gamma + ln_beta rounded to dt, with the statistics
  // computed in the same float32 order as layer_norm(), so the result equals layer_norm() into a
  // buffer followed by gemv() bit for bit (when x, w, ln_gamma, ln_beta are 16-byte aligned and k
  // is a multiple of 16 bytes, and k / (16 / sizeof(dt)) <= 1024). Needs m * k * sizeof(dt) <= 46 KiB
  // (kUnsupported otherwise). ln_gamma, ln_beta: [k].
  const void* ln_gamma = nullptr;
  const void* ln_beta = nullptr;
  float ln_eps = 1e-5f;
  // Split output (0 < split_col < n): columns [split_col, n) of row i go to
  // y2 + rows2[i] * ld2 + (c - split_col) instead of y (e.g. the K | V of a fused QKV product into
  // rows of a KV cache [rows, 2d]: split_col = d, ld2 = 2d); columns [0, split_col) go to y as
  // usual (row stride n). rows2: device int32 [m], trusted. Not with y_float32.
  int64_t split_col = 0;
  void* y2 = nullptr;
  int64_t ld2 = 0;
  const int32_t* rows2 = nullptr;
  // One-row products (m == 1, no split, float16/bfloat16, 16-byte aligned): each warp's weight
  // rows copied whole into shared memory before the programmatic-launch wait (the same result
  // bit for bit) when every block fits one wave. 1: on, 0: off, -1: the default, on unless
  // SPEECHCORE_GEMV_PREFETCH=0 at first use (H200, large-v3 bf16, batch 1: 149.1 / 147.9 ms a
  // window against 155.5 without, session 16).
  int row_prefetch = -1;
  // The residual read through fixed-point terms (common.h; one-row steps with the attention
  // output products folded into their attention kernels): with ln_gamma the layer norm's x, with
  // accumulate (and no layer norm) the y that is added to, is x + the terms. Needs m == 1 and a
  // product the row-prefetching kernel takes (gemv_row_prefetch_fits; kUnsupported otherwise).
  ResidualTerms residual;
};

// Whether gemv() runs a one-row product of this shape with whole weight rows prefetched (one
// wave of blocks holds them; float16/bfloat16, k a multiple of 8): the products a ResidualTerms
// fusion needs. Queries the current device.
bool gemv_row_prefetch_fits(DataType dt, int64_t n, int64_t k, bool layer_norm);

// Launched with programmatic dependent launch on Hopper (kernel_utils.cuh; SPEECHCORE_PDL=0 turns
// it off): the kernel loads its first weights before waiting for the previous kernel.
void gemv(DataType dt, const void* x, const void* w, const void* bias, void* y, bool y_float32, int64_t m, int64_t n,
          int64_t k, bool accumulate, bool gelu, cudaStream_t stream, const GemvFusion* fusion = nullptr);

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

  // y = gelu(x w^T + bias) (exact erf GELU): fused into gemv() for m <= gemv_max_rows(), else
  // the cuBLASLt product followed by the GELU kernel.
  void linear_gelu(DataType dt, const void* x, const void* w, const void* bias, void* y, int64_t m, int64_t n,
                   int64_t k, cudaStream_t stream);

  // The same product with a float32 output (logits of a float16/bfloat16 model), no bias.
  void linear_f32_out(DataType dt, const void* x, const void* w, float* y, int64_t m, int64_t n, int64_t k,
                      cudaStream_t stream);

  // `batch` products at fixed element strides (per-head products of absorbed attention):
  // y_i[m, n] = x_i[m, k] w_i^T with w_i [n, k], or x_i w_i with w_kn (w_i [k, n]); x_i = x + i * sx
  // (row stride ldx), w_i = w + i * sw (row stride ldw), y_i = y + i * sy (row stride ldy).
  // No bias, no accumulation; always cuBLASLt.
  void batched(DataType dt, const void* x, int64_t ldx, int64_t sx, const void* w, int64_t ldw, int64_t sw, bool w_kn,
               void* y, int64_t ldy, int64_t sy, int64_t m, int64_t n, int64_t k, int batch, cudaStream_t stream);

  // Products with m <= this many rows go to gemv() instead of cuBLASLt (0 = never, at most
  // kGemvMaxRows). Default: kGemvDefaultRows, or $SPEECHCORE_GEMV_MAX_M when set (measurements).
  void set_gemv_max_rows(int rows);
  int gemv_max_rows() const;

  // Number of (shape, type) plans cached so far (each chosen once by cuBLASLt's heuristic).
  size_t cached_plans() const;
  // Host seconds spent choosing plans (descriptors + cuBLASLt's heuristic), all runners of
  // the process together: the first product of each new shape pays it.
  static double plan_seconds();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace speechcore::cuda
