// A whole Whisper decoder step for one token row in one persistent kernel (any compute type).
// EXPERIMENTAL, opt-in (SPEECHCORE_PERSISTENT_STEP=1 when a model loads): on the H200 it is
// still slower than the fused kernel-per-operation step (large-v3 bf16, 100-token window: 191 ms
// against 166; benchmarks/RESULTS.md, session 9, has the per-phase trace and what was tried).
//
// The kernel-per-operation step (8 kernels a layer, ~6 us each at batch 1 on the H200, against
// ~1.3 us of weight traffic) is bound by the fixed cost of each kernel: launch, dependency wait,
// and the drain of the previous grid. Here one cooperative grid (one block per SM, every block
// resident) runs every layer, separating dependent phases by a grid-wide barrier. Each block owns
// a contiguous slice of the rows of every weight matrix and copies the slice of the next product
// (with its layer norm's gamma/beta and its bias) into shared memory by bulk copies (TMA, two
// buffers, mbarrier completion) while the current phase runs, so weight streaming overlaps the
// barriers, the layer norms and the attention. A cooperative launch needs a free block slot
// (~231 KB of shared memory) on every SM: in the engine it starts only once the encoder lane's
// kernels on other streams have left the SMs (not measured yet).
//
// Phases of a layer (a barrier after each): layer norm + QKV product (K/V into the cache row);
// self-attention (a block per head); output product + residual; layer norm + cross-attention
// query; cross-attention (heads x splits blocks, partial softmax states to the workspace);
// merge of the splits + output product + residual; layer norm + fc1 + GELU; fc2 + residual.
// Products accumulate in float32 in the same order as gemv() (cuda/src/gemv.cu) with layer
// norm statistics in layer_norm()'s order; attention uses its own order, so results match the
// kernel-per-operation step to rounding, not bit for bit.
#pragma once

#include <cstddef>
#include <cstdint>

#include "speechcore_cuda/attention.h"
#include "speechcore_cuda/common.h"

namespace speechcore::cuda {

// Device pointers of one decoder layer's weights (the model's types; [out, in] row-major).
struct DecoderLayerWeights {
  const void *ln1_g, *ln1_b, *qkv_w, *qkv_b, *out_w, *out_b;     // self-attention, qkv [3d, d]
  const void *ln2_g, *ln2_b, *q_w, *q_b, *cout_w, *cout_b;       // cross-attention, q [d, d]
  const void *ln3_g, *ln3_b, *fc1_w, *fc1_b, *fc2_w, *fc2_b;     // feed-forward [ffn, d], [d, ffn]
};

struct PersistentStepArgs {
  const DecoderLayerWeights* layers = nullptr;  // device array [n_layers]
  int n_layers = 0, d = 0, heads = 0, ffn = 0;  // head size 64
  float ln_eps = 1e-5f;
  // Hidden state of the row, [d]: the embedding in, the last layer's output out.
  void* x = nullptr;
  void* qkv = nullptr;  // scratch [3d]
  void* att = nullptr;  // scratch [d]
  void* ff = nullptr;   // scratch [ffn]
  // Self-attention K/V: layer l's row r at self_kv + l * self_layer + r * 2d (K | V), rows as in
  // attention_decode (slot * self_batch_stride / 2d + position, or paged through `paged`).
  void* self_kv = nullptr;
  int64_t self_layer = 0, self_batch_stride = 0;
  PagedKV paged;
  int self_max = 0;  // positions a row can have (the batch's ctx)
  // Cross-attention K/V: layer l, slot s, key j at cross + l * cross_layer + s * cross_batch_stride + j * 2d.
  const void* cross = nullptr;
  int64_t cross_layer = 0, cross_batch_stride = 0;
  int t_enc = 0;
  // Step inputs of the row (device int32, element 0 read): KV-cache row of the new K/V, slot,
  // self-attention length, cross-attention length.
  const int32_t* kv_row = nullptr;
  const int32_t* slot = nullptr;
  const int32_t* self_len = nullptr;
  const int32_t* cross_len = nullptr;
};

// The grid (blocks) and dynamic shared memory the kernel needs for these sizes on the current
// device; grid 0 unless SPEECHCORE_PERSISTENT_STEP=1 (it is opt-in), or when it cannot run there
// (no compute capability 9.0 cooperative launch, head size not 64, ffn not a multiple of 64, or
// the shared memory it needs over the device's limit). self_max: the most self-attention
// positions a row will have (a launch may use fewer).
struct PersistentStepPlan {
  int grid = 0;                // blocks (one per SM); 0: unsupported
  size_t smem = 0;             // dynamic shared memory per block
  int cross_splits = 0, chunk = 0, score_cap = 0, wbuf_bytes = 0, rows_cap = 0, wslice = 0;
  int n_layers = 0, d = 0, ffn = 0, heads = 0, self_max = 0, t_enc = 0;  // the sizes planned for
  size_t workspace_bytes = 0;  // device workspace (barrier counters + split partials)
};
PersistentStepPlan persistent_step_plan(DataType dtype, int n_layers, int d, int heads, int ffn, int self_max,
                                        int t_enc);

// SPEECHCORE_PERSISTENT_TRACE=1 (diagnostics): block 0 prints the cycles each phase of a layer
// takes (its work, then its wait at the barrier) on the 50th launch.
//
// Zeroes a newly allocated workspace (its barrier counters; every launch leaves them at zero).
void persistent_step_init(void* workspace, size_t bytes, cudaStream_t stream);

// One decoder step of one row through every layer (plan from persistent_step_plan with the same
// sizes; workspace of plan.workspace_bytes, 16-byte aligned, not shared with concurrent work).
// Enqueued on `stream` as one cooperative launch (capturable in CUDA graphs).
void persistent_step(DataType dtype, const PersistentStepArgs& args, const PersistentStepPlan& plan, void* workspace,
                     cudaStream_t stream);

}  // namespace speechcore::cuda
