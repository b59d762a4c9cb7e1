// Internal: parameters and launch entry points of the attention kernels, shared by the launcher
// (attention_launch.cu, which validates and dispatches) and the per-type kernel translation units
// (attention_prefill_*.cu, attention_decode.cu: explicit instantiations of attention_kernels.cuh).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace speechcore::cuda::attn {

constexpr float kLog2e = 1.4426950408889634f;

// ---------------------------------------------------------------------------------------------
// Parameters (element strides; the kernels trust them: attention.cu validated them)
// ---------------------------------------------------------------------------------------------
struct PrefillParams {
  const void* q;
  const void* k;
  const void* v;
  void* out;
  int64_t ldq, ldk, ldv, ldo;
  int64_t q_bs, k_bs, v_bs, o_bs;
  int tq, tk;
  int causal;        // -1 = none, else key j masked for query i when j > i + causal (0 <= causal < tk)
  float scale_log2;  // log2(e) / sqrt(head_dim)
};

struct DecodeParams {
  const void* q;
  const void* k;
  const void* v;
  void* out;
  int64_t ldk, ldv;
  int64_t q_bs, k_bs, v_bs, o_bs;
  const int32_t* kv_lengths;
  const int32_t* kv_index;  // null = identity
  const int32_t* block_table;  // paged K/V (null = not paged): [batch, table_stride] block ids
  int64_t table_stride;
  int block_size;
  int max_kv_len;
  int splits;          // blocks per (sequence, head) along the keys
  int chunk;           // keys per split
  float scale_log2;
  float* partial_o;    // [batch, heads, splits, head_dim] unnormalized outputs (splits > 1)
  float* partial_ml;   // [batch, heads, splits, 2] running max (log2 domain) and sum (splits > 1)
  unsigned* counters;  // [batch * heads] finished splits (splits > 1; zero before and after a call)
  bool kv_static;      // K/V and kv_index not written by earlier kernels of the step (see attention_decode)
};

// Defined in attention_kernels.cuh, explicitly instantiated for T in {float, __half, __nv_bfloat16}
// and D in {64, 128}. batch/heads: grid sizes (validated by the caller).
template <typename T, int D> void launch_prefill(const PrefillParams& p, int batch, int heads, cudaStream_t s);
template <typename T, int D> void launch_decode(const DecodeParams& p, int batch, int heads, cudaStream_t s);

// Decode splitting policy constants (see attention_decode_split in attention_launch.cu).
constexpr int kDecodeTargetBlocks = 4 * 132;  // ~4 blocks per SM of an H100/H200
constexpr int kDecodeMinChunk = 128;          // keys per split at least (and chunks are multiples of this)
constexpr int kDecodeMaxSplits = 32;
// Split-K happens only when batch * heads < kDecodeTargetBlocks, so the merge counters (one per
// (sequence, head)) fit a fixed region at the start of the scratch, whatever the call's shape.
constexpr size_t kDecodeCounterBytes = sizeof(unsigned) * kDecodeTargetBlocks;
static_assert(kDecodeCounterBytes % 16 == 0, "the partials after the counters stay 16-byte aligned");

}  // namespace speechcore::cuda::attn
