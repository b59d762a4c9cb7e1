// Non-GEMM, non-attention kernels of the Whisper forward pass on the GPU: layer norm, GELU,
// adds, embeddings, the conv stem's im2col. Twins of the CPU kernels in cpp/src/ops/ops.h.
//
// Conventions (all launchers):
// - `dt` is the element type of every activation/weight pointer of the call (float32,
//   float16 or bfloat16); math runs in float32 and results are rounded once to `dt`.
// - Pointers are device pointers; shapes are row-major with the last dim contiguous.
// - Arguments are checked on the host (kInvalidArgument); device-side index values (token
//   ids, positions) are trusted.
// - Work is enqueued on `stream`; nothing is allocated; launch errors throw speechcore::Error.
// - Where all pointers are 16-byte aligned (and, for row-wise kernels, the row length is a
//   multiple of 16 bytes) the kernels use 128-bit accesses; otherwise scalar ones.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "speechcore_cuda/common.h"

namespace speechcore::cuda {

// y = (x - mean) / sqrt(var + eps) * gamma + beta over each row (two-pass mean/variance in
// float32, one block per row). x, y: [rows, cols] (y may alias x), gamma, beta: [cols].
void layer_norm(DataType dt, const void* x, const void* gamma, const void* beta, void* y, int64_t rows,
                int64_t cols, float eps, cudaStream_t stream);

// Exact (erf) GELU in place: x = 0.5 x (1 + erf(x / sqrt 2)). x: [n]
void gelu(DataType dt, void* x, int64_t n, cudaStream_t stream);

// x = gelu(x + bias) in place, bias broadcast over rows. x: [rows, cols], bias: [cols]
void bias_gelu(DataType dt, void* x, const void* bias, int64_t rows, int64_t cols, cudaStream_t stream);

// y += x. x, y: [n] (x == y allowed: doubles y)
void add(DataType dt, const void* x, void* y, int64_t n, cudaStream_t stream);

// Token plus positional embedding, each token at its own position (batched decoding):
// out[i, :] = table[ids[i], :] + pos_table[positions[i], :].
// table: [vocab, d], ids: int32 [n] in [0, vocab), positions: int32 [n] in [0, max_positions),
// pos_table: [max_positions, d], out: [n, d]. ids/positions live on the device and are trusted.
void embedding(DataType dt, const void* table, const int32_t* ids, const int32_t* positions, const void* pos_table,
               void* out, int64_t n, int64_t d, cudaStream_t stream);

// Row copy with optional index maps (gathers for logits rows, scatters into KV caches):
// dst[(dst_rows ? dst_rows[i] : i) * ld_dst + c] = src[(src_rows ? src_rows[i] : i) * ld_src + c]
// for i < n, c < cols. Index maps are device int32 [n] (trusted); strides in elements.
void copy_rows(DataType dt, const void* src, int64_t ld_src, const int32_t* src_rows, void* dst, int64_t ld_dst,
               const int32_t* dst_rows, int64_t n, int64_t cols, cudaStream_t stream);

// Output length of a 1-D convolution (as ops::conv1d_output_length).
inline int64_t conv1d_output_length(int64_t t_in, int kw, int stride, int pad) {
  return (t_in + 2 * static_cast<int64_t>(pad) - kw) / stride + 1;
}

// im2col of ops::conv1d, for a batch: input element (b, c, t) is read at
// x[b * x_batch_stride + c * x_cstride + t * x_tstride] (channel-major and time-major inputs
// both work), zero outside [0, t_in).
// col[b * t_out + t, c * kw + j] = x(b, c, t * stride + j - pad), t_out = conv1d_output_length.
// col: [batch * t_out, c_in * kw]; the caller multiplies it by w^T ([c_out, c_in * kw]).
void im2col_conv1d(DataType dt, const void* x, int64_t c_in, int64_t t_in, int64_t x_cstride, int64_t x_tstride,
                   int64_t batch, int64_t x_batch_stride, int kw, int stride, int pad, void* col,
                   cudaStream_t stream);

// x[b, t, :] += pos[t, :] (the encoder's positional embedding after the conv stem).
// x: [batch, t, d], pos: [t, d]
void add_positional(DataType dt, void* x, const void* pos, int64_t batch, int64_t t, int64_t d,
                    cudaStream_t stream);

}  // namespace speechcore::cuda
