// Multi-head scaled dot-product attention on CUDA: the device twin of ops::attention
// (cpp/src/ops/ops.h) with a batch dimension.
//
// Per sequence b and head h: out = softmax(scale * q k^T [+ causal mask]) v, scale = 1/sqrt(head_dim),
// accumulated in float32. Element (row i, column c) of sequence b lives at
//   q[b * q_batch_stride + i * ldq + c]   (likewise k/ldk, v/ldv, out/ldo; strides in elements)
// and head h occupies columns [h * head_dim, (h + 1) * head_dim), so fused QKV [t, 3d] or cross KV
// [t, 2d] buffers work without copies (q = qkv, k = qkv + d, v = qkv + 2d, ldq = ldk = ldv = 3d).
// A batch stride of 0 shares one buffer between all sequences (e.g. cross K/V of beams).
//
// Requirements (checked here, kInvalidArgument otherwise): pointers 16-byte aligned; row and batch
// strides multiples of 16 / sizeof(element) (8 for float16/bfloat16, 4 for float32); row strides
// >= heads * head_dim; batch strides >= 0. head_dim must be 64 or 128 (kUnsupported otherwise).
// Launchers only enqueue work on `stream`; they never allocate or synchronize.
#pragma once

#include <cstddef>
#include <cstdint>

#include "speechcore_cuda/common.h"

namespace speechcore::cuda {

// Prompt / encoder attention: `batch` sequences of tq queries against tk keys (tk >= 1).
// causal_offset >= 0 masks key j for query i when j > i + causal_offset (the query's absolute
// position in the key sequence); -1 = no mask. Flash-attention style (online softmax, K/V tiles in
// shared memory, tensor cores for float16/bfloat16, FFMA for float32); no tq x tk scores in memory.
// batch == 0 or tq == 0 is a no-op.
void attention_prefill(DataType dtype, const void* q, int64_t ldq, int64_t q_batch_stride,
                       const void* k, int64_t ldk, int64_t k_batch_stride,
                       const void* v, int64_t ldv, int64_t v_batch_stride,
                       void* out, int64_t ldo, int64_t out_batch_stride,
                       int batch, int64_t tq, int64_t tk, int heads, int head_dim,
                       int64_t causal_offset, cudaStream_t stream);

// Scaled dot products of one head without softmax (word timestamps read the alignment heads'
// cross-attention): out[r * cols + c] = sum_j (scale * q[r * q_stride + j]) * k[c * k_stride + j]
// for j < head_dim (<= 128), float32 out and accumulation; strides in elements, no alignment
// requirement. rows or cols == 0 is a no-op.
void attention_scores(DataType dtype, const void* q, int64_t q_stride, const void* k, int64_t k_stride, int rows,
                      int cols, int head_dim, float scale, float* out, cudaStream_t stream);

// Bytes of scratch attention_decode needs for these sizes (0 when it needs none). Depends only on
// the arguments (not on the device or dtype), so it can size a workspace once.
size_t attention_decode_scratch_bytes(int batch, int heads, int head_dim, int64_t max_kv_len);

// Single-query attention (one decoder step): sequence b's query row is q + b * q_batch_stride
// (ldq/ldo are validated but only one row is read/written per sequence), and it attends to its
// first kv_lengths[b] keys (device array of `batch` int32; all of them visible: a self-attention
// KV cache holds only the past), e.g. kv_lengths[b] = 1500 for cross-attention.
// kv_index (device int32 [batch], or null = identity) picks the K/V sequence of each query row:
// row b reads k + kv_index[b] * k_batch_stride (likewise v), so rows can be reordered or dropped
// (finished sequences) and several rows can share one K/V sequence (beams, cross-attention)
// without copies; out and q stay indexed by b. Indices are trusted.
// kv_lengths[b] is clamped to [0, max_kv_len] on the device; a sequence with 0 keys gets zeros.
// Split-K (flash-decoding) across blocks when batch * heads is small; `scratch` must hold
// attention_decode_scratch_bytes(batch, heads, head_dim, max_kv_len) bytes (16-byte aligned; may
// be null when that is 0) and must not be shared with work running concurrently on other streams.
// The last block of each (sequence, head) to finish merges the splits (one kernel); it finds out
// through counters at the start of the scratch that every call leaves at zero: call
// attention_decode_scratch_init once on a newly allocated scratch (then any later shapes work).
//
// Paged K/V (paged && paged->block_table): key j of query row b lives at row
//   r = block_table[b * table_stride + j / block_size] * block_size + j % block_size
// i.e. at k + r * ldk (likewise v + r * ldv); kv_index and the k/v batch strides are ignored
// (any value). block_table: device int32, ceil(max_kv_len / block_size) <= table_stride entries
// per row, block ids trusted (only the entries of keys below kv_lengths[b] are read);
// block_size >= 1.
struct PagedKV {
  const int32_t* block_table = nullptr;
  int64_t table_stride = 0;
  int block_size = 0;
};
//
// kv_static (not paged): the K/V rows and kv_index are written by nothing the previous kernels
// of the stream do (the cross-attention K/V of windows encoded earlier), and every sequence has
// max_kv_len rows. The kernel then issues its first K/V loads before the programmatic-launch
// wait, so they overlap the previous kernel. The results are bit-identical either way.
void attention_decode(DataType dtype, const void* q, int64_t ldq, int64_t q_batch_stride,
                      const void* k, int64_t ldk, int64_t k_batch_stride,
                      const void* v, int64_t ldv, int64_t v_batch_stride,
                      void* out, int64_t ldo, int64_t out_batch_stride,
                      const int32_t* kv_lengths, const int32_t* kv_index, int batch, int heads, int head_dim,
                      int64_t max_kv_len, void* scratch, cudaStream_t stream, const PagedKV* paged = nullptr,
                      bool kv_static = false);

// How attention_decode splits the keys (exposed for tests and workspace planning): `splits`
// blocks per (sequence, head), each handling `chunk` consecutive keys.
struct AttentionDecodeSplit {
  int splits;
  int64_t chunk;
};
AttentionDecodeSplit attention_decode_split(int batch, int heads, int64_t max_kv_len);

// Cross-attention with the key and value projections absorbed (weight absorption, as in
// multi-head latent attention): every head of every query row attends over the same encoder
// output X instead of per-layer K = X W_k^T and V = X W_v^T. With qa_h = q_h W_k,h (the query of
// head h pulled back through that head's rows of W_k, computed by the caller),
//   out[row, h, :] = softmax_j(scale * qa_h . x_j) x_j        (j < kv_lengths[row])
// and the caller finishes with out_h W_v,h^T (+ b_v, which passes through the softmax). K's bias
// drops out of the softmax. X is read once per row for all heads: half the bytes of K and V, and
// one copy for all decoder layers. Tensor cores (mma.sync), float32 accumulation and softmax.
//
// qa: [rows, heads, dim] (row stride ld_qa elements, heads contiguous at stride dim).
// x: slot s's rows are x + s * x_slot_stride, [max_kv_len, dim] contiguous (row stride dim).
// Row r reads slot kv_index[r] (device int32 [rows]) or, with kv_index null, r / rows_per_slot.
// kv_lengths: device int32 [rows] (clamped to [0, max_kv_len]), or null = max_kv_len for all.
// out: [rows, heads, dim] (row stride ld_out). Rows with no keys get zeros.
// float16 / bfloat16 only, dim in {384, 512, 768, 1024, 1280} with heads <= 8, 8, 16, 16, 24
// (Whisper's shapes; attention_absorbed_supported), dim = heads * 64 not required.
// Splits keys over blocks when rows are few; `scratch` must hold
// attention_absorbed_scratch_bytes(rows, heads, dim, max_kv_len) bytes (16-byte aligned).
// x_static: x, kv_index and kv_lengths are written by nothing the previous kernels of the stream
// do, so the first X tiles are requested before the programmatic-launch wait.
void attention_absorbed(DataType dtype, const void* qa, int64_t ld_qa, const void* x, int64_t x_slot_stride,
                        void* out, int64_t ld_out, const int32_t* kv_lengths, const int32_t* kv_index,
                        int rows_per_slot, int rows, int heads, int dim, int64_t max_kv_len, float scale,
                        void* scratch, cudaStream_t stream, bool x_static = false);
size_t attention_absorbed_scratch_bytes(int rows, int heads, int dim, int64_t max_kv_len);
bool attention_absorbed_supported(DataType dtype, int heads, int dim);
// Key splits per row (exposed for tests): `splits` blocks per row, `chunk` keys each.
AttentionDecodeSplit attention_absorbed_split(int rows, int64_t max_kv_len);

// A one-row decode step's cross-attention up to the heads' outputs in one kernel (rows of one
// token each, float16/bfloat16, head size 64):
//   q = layer_norm(x) wq^T + bq, computed as gemv() with its fused layer norm does (bit for bit),
//   out[r, h*64:(h+1)*64] = softmax_j(q_h . K_j / 8) V_j over the slot kv_index[r]'s first
//   kv_lengths[r] keys (clamped to max_kv_len),
// as attention_decode(kv_static) does, with the splits merged in another order (a cluster of 8
// blocks per row and head; the query features and the split partials meet in distributed shared
// memory). The K/V and the query weights are loaded before the programmatic-launch wait, so the
// same rules as kv_static hold: nothing earlier in the stream writes k, v, kv_index, kv_lengths.
// x: [rows, d_model]; ln_gamma, ln_beta, bq (or null): [d_model]; wq: [d_model, d_model];
// slot s's key j of head h at k + s * kv_batch_stride + j * ld_kv + h * 64 (likewise v);
// out: [rows, ldo]. Needs cross_query_attention_supported (d_model = heads * 64 <= 1280,
// max_kv_len <= 1536, a compute-capability-9 device: clusters) and 16-byte aligned operands.
//
// Options of both one-kernel sub-layers (one-row steps):
// - fold (non-null): the sub-layer's output product runs in the kernel too. Instead of writing
//   the heads' outputs to out (then unused, may be null), each block multiplies its head's 64
//   outputs (rounded to the model's type, as out would hold them) by its share of w_out's
//   columns of that head (w_out: [d_model, d_model], rows = output features, copied into shared
//   memory before the wait) and adds the float32 partials to fold->acc[r * d_model + c] as
//   fixed point (ResidualTerms, common.h). The output bias is left to the reader of the terms.
// - x_terms (cross only, with a fold; null or terms 0: none): x is read as x + the terms (the
//   self-attention's folded output product, not yet added to x).
struct OutputFold {
  const void* w_out = nullptr;
  int64_t* acc = nullptr;
};
bool cross_query_attention_supported(DataType dtype, int d_model, int heads, int64_t max_kv_len);
void cross_query_attention(DataType dtype, const void* x, const void* ln_gamma, const void* ln_beta, float ln_eps,
                           const void* wq, const void* bq, const void* k, const void* v, int64_t ld_kv,
                           int64_t kv_batch_stride, const int32_t* kv_index, const int32_t* kv_lengths,
                           int64_t max_kv_len, void* out, int64_t ldo, int rows, int d_model, int heads,
                           cudaStream_t stream, const ResidualTerms* x_terms = nullptr,
                           const OutputFold* fold = nullptr);

// A one-row decode step's self-attention up to the heads' outputs in one kernel (rows of one
// token each, float16/bfloat16, head size 64), as cross_query_attention for the cross-attention:
//   [q | k | v] = layer_norm(x) w_qkv^T + b_qkv, computed as gemv() with its fused layer norm
//   and split output does (bit for bit); k | v written to the cache row kv_rows[r] (kv + row *
//   2 d_model: K then V, as gemv()'s split output); then
//   out[r, head h] = softmax_j(q_h . K_j / 8) V_j over the row's first kv_lengths[r] keys (the
//   new one included, clamped to max_kv_len): key j at row kv_index[r] * max_kv_len + j of the
//   contiguous cache, or through paged->block_table as attention_decode reads it.
// A cluster of 8 blocks per (row, head): each block computes 8 of the head's features of q, k
// and v (their weight rows copied into shared memory before the programmatic-launch wait) and
// attends over an eighth of the keys; the query and the partial results meet in distributed
// shared memory. w_qkv: [3 d_model, d_model]; b_qkv: [3 d_model] or null; out: [rows, ldo].
// Needs self_qkv_attention_supported (d_model = heads * 64 <= 1280, max_kv_len <= 512, a
// compute-capability-9 device).
bool self_qkv_attention_supported(DataType dtype, int d_model, int heads, int64_t max_kv_len);
void self_qkv_attention(DataType dtype, const void* x, const void* ln_gamma, const void* ln_beta, float ln_eps,
                        const void* w_qkv, const void* b_qkv, void* kv, const int32_t* kv_rows,
                        const int32_t* kv_lengths, const int32_t* kv_index, const PagedKV* paged, int64_t max_kv_len,
                        void* out, int64_t ldo, int rows, int d_model, int heads, cudaStream_t stream,
                        const OutputFold* fold = nullptr);

// Zeroes the merge counters of a decode scratch buffer of `bytes` bytes (enqueued on `stream`),
// once after allocating it. No-op for bytes == 0.
void attention_decode_scratch_init(void* scratch, size_t bytes, cudaStream_t stream);

}  // namespace speechcore::cuda
