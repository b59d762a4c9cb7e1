// CPU operators on contiguous float32 data. Each op checks its arguments here (the op
// boundary) and then runs the kernel; the CUDA backend adds its dispatch in the .cc files.
// Shapes are given as comments: x: [rows, cols] means row-major, cols contiguous.
#pragma once

#include <cstdint>

#include "core/thread_pool.h"
#include "speechcore/tensor.h"

namespace speechcore::ops {

// Context for a sequence of op calls: the thread pool for the library's own kernels.
// BLAS uses its own threads, set once with set_blas_threads().
struct Context {
  core::ThreadPool* pool = nullptr;
};

void set_blas_threads(int n);
int blas_threads();

// y = x * w^T (+ bias) (+ y if accumulate)
// x: [m, k], w: [n, k], bias: [n] or null, y: [m, n]
void linear(const Context& ctx, const float* x, const float* w, const float* bias, float* y,
            int64_t m, int64_t n, int64_t k, bool accumulate = false);

// Layer normalization over the last dim: y = (x - mean) / sqrt(var + eps) * gamma + beta.
// x, y: [rows, cols] (may alias), gamma, beta: [cols]
void layer_norm(const Context& ctx, const float* x, const float* gamma, const float* beta,
                float* y, int64_t rows, int64_t cols, float eps = 1e-5f);

// Exact GELU, x * 0.5 * (1 + erf(x / sqrt(2))), in place. x: [n]
void gelu(const Context& ctx, float* x, int64_t n);

// In-place softmax over rows of x: [rows, cols].
void softmax(const Context& ctx, float* x, int64_t rows, int64_t cols);
// Numerically stable log-softmax of one row, in place. x: [n]
void log_softmax(float* x, int64_t n);

// log(sum(exp(x))) of one row, vectorized; -inf for an all -inf row. x: [n]
float logsumexp(const float* x, int64_t n);

// y += x. x, y: [n]
void add(const Context& ctx, const float* x, float* y, int64_t n);

// Token embedding plus positional embedding: out[i] = table[ids[i]] + pos[i].
// table: [vocab, d], ids: [n] (checked by the caller), pos: [n, d], out: [n, d]
void embedding(const float* table, const int* ids, int64_t n, int64_t d, const float* pos, float* out);

// Multi-head scaled dot-product attention.
// q: [tq, heads * head_dim] with row stride ldq; k, v: [tk, heads * head_dim] with row strides
// ldk, ldv; out: [tq, heads * head_dim] (row stride heads * head_dim).
// causal_offset >= 0 masks key j for query i when j > i + causal_offset (the query's absolute
// position); -1 means no mask. scratch: attention_scratch_floats(ctx, tq, tk, heads) floats.
constexpr int64_t kAttentionRowSplit = 16;  // from this many queries on, rows are split over threads
int64_t attention_scratch_floats(const Context& ctx, int64_t tq, int64_t tk, int heads);
void attention(const Context& ctx, const float* q, int64_t ldq, const float* k, int64_t ldk,
               const float* v, int64_t ldv, float* out, int64_t tq, int64_t tk, int heads,
               int head_dim, int64_t causal_offset, float* scratch);

// 1-D convolution with kernel size `kw`, zero padding `pad`, stride `stride`, computed as
// im2col + GEMM. Input element (c, t) is read at x[c * x_cstride + t * x_tstride], so both
// channel-major ([c_in, t_in]) and time-major ([t_in, c_in]) inputs work.
// w: [c_out, c_in, kw], bias: [c_out], y: [t_out, c_out] (time-major). col: [t_out, c_in * kw].
int64_t conv1d_output_length(int64_t t_in, int kw, int stride, int pad);
void conv1d(const Context& ctx, const float* x, int64_t c_in, int64_t t_in, int64_t x_cstride,
            int64_t x_tstride, const float* w, const float* bias, int64_t c_out, int kw,
            int stride, int pad, float* y, float* col);

}  // namespace speechcore::ops
