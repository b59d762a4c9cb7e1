// Whisper encoder-decoder forward passes on a CUDA GPU for a batch of 30 s windows: weights
// uploaded once in the compute type, activations in the same type, float32 accumulation in
// every kernel and GEMM, logits in float32. Mirrors WhisperModel (the CPU twin) layer for layer.
// Not thread-safe: one caller at a time (the WindowRunner serializes); all work runs on the
// model's stream.
//
// A batch lives in a WhisperBatchCuda: `slots` windows, each with its cross-attention K/V
// (computed once by encode) and a self-attention KV cache of `ctx` positions, plus fixed
// per-step buffers (activations, logits, token-id arrays) so a decoder step allocates nothing
// and its launches can be captured in a CUDA graph.
#pragma once

#include <cuda_runtime_api.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "models/whisper/whisper_weights.h"
#include "speechcore_cuda/common.h"
#include "speechcore_cuda/decoder_step.h"
#include "speechcore_cuda/gemm.h"

namespace speechcore::models::whisper {

struct WhisperBatchCuda {
  int slots = 0;  // windows held
  int ctx = 0;    // self-attention positions per window
  Tensor cross;   // [decoder_layers, slots * n_audio_ctx, 2 * d_model] (K | V), or absorbed:
                  // [slots * n_audio_ctx, d_model], each window's encoder output (after the final
                  // layer norm), one copy for every decoder layer (cuda::attention_absorbed)
  bool absorbed = false;
  Tensor self_kv; // [decoder_layers, kv rows, 2 * d_model] (K | V): row slot * ctx + position, or
                  // paged (block_size > 0): row block * block_size + position % block_size
  // Paged self-attention K/V (the engine): block_table [slots, table_stride] int32, row r of the
  // rows step() runs lists that row's blocks (written by the caller with the step inputs).
  int block_size = 0;
  int table_stride = 0;
  Tensor block_table;
  // Per-step buffers for up to `slots` rows.
  Tensor x, h, qkv, att, ff;  // [slots, d], [slots, d], [slots, 3d], [slots, d], [slots, 4d]
  Tensor attn_scratch;        // attention_decode / attention_absorbed split-K partials
  Tensor resid_acc;           // int64 [2, d] as bytes, zero between steps: the one-row step's
                              // folded output products (cuda::ResidualTerms), when out_fold()
  Tensor qa, za;              // absorbed: [slots, heads * d] queries through W_k, attention over X
  Tensor absorb_scratch;      // absorbed: attention_absorbed's split partials (its own: the decode
                              // scratch's merge counters must stay zero between calls)
  Tensor logits;              // float32 [2 * slots, vocab]
  // Step inputs (device int32), written by the caller before step(): ids, positions,
  // KV-cache rows (slot * ctx + position), slots, attention lengths (position + 1) (see step()),
  // and one array step() does not read (the decoding loop keeps tokens-generated-so-far there).
  Tensor step_ints;           // [kStepArrays, slots]
  static constexpr int kStepArrays = 6;
  Tensor cross_len;           // int32 [slots], all n_audio_ctx (cross-attention lengths)
  int32_t* step_array(int i) const { return const_cast<int32_t*>(step_ints.data<int32_t>()) + i * slots; }
};

// The alignment heads' raw cross-attention scores (q.k / sqrt(head_dim), no softmax) captured
// during the prefill of one sequence (word timestamps): device float32
// [heads.size(), len, n_audio_ctx].
struct CrossScoresCuda {
  std::vector<std::pair<int, int>> heads;  // (decoder layer, head)
  float* scores = nullptr;
};

// A second encoder context for asynchronous admissions: its own stream, cuBLASLt runner, pinned
// staging and activation buffers for up to `windows` windows, so windows are encoded while decode
// steps run on the model's stream. Work on it is ordered by its stream. The staging buffer is a
// ring of regions of `windows` windows each, one per encoder chunk, each with an event recorded
// after the copy out of it: the host waits only before it rewrites a region, until that region's
// copy is done. With a region for each chunk of an admission, the chunks of one admission do not
// wait for each other's encoder (one buffer made an admission of n chunks wait for n - 1 of them);
// a later admission still waits for the copies of the one before (back-pressure).
struct EncoderLane {
  EncoderLane() = default;
  EncoderLane(const EncoderLane&) = delete;
  EncoderLane& operator=(const EncoderLane&) = delete;
  ~EncoderLane();
  int windows = 0;
  cudaStream_t stream = nullptr;
  std::unique_ptr<cuda::GemmRunner> gemm;
  void* staging = nullptr;              // pinned: regions x windows x n_mels x 2 n_audio_ctx elements of the model's type
  size_t region_bytes = 0;
  std::vector<cudaEvent_t> staged;      // per region: recorded after the copy out of it
  int next_region = 0;
  // Windows encode_async would stage now without waiting: the ring's free regions from
  // next_region on (their copies done) times `windows`.
  int free_windows() const;
  // Host seconds of encode_async's chunks on this lane: waiting for a staging region, converting
  // the features into it, and enqueueing the chunk's copies and kernels (a launch blocks while
  // the stream's launch queue is full).
  double wait_s = 0, stage_s = 0, launch_s = 0;
  int64_t chunks = 0;
  Tensor x_mel, col1, h1, col2, x, h, qkv, att, ff;  // activations at `windows` windows
};

class WhisperModelCuda {
 public:
  WhisperModelCuda(const WhisperWeights& weights, cuda::DataType dtype);
  ~WhisperModelCuda();

  const WhisperConfig& config() const { return config_; }
  cuda::DataType dtype() const { return dtype_; }
  size_t weight_bytes() const { return weight_bytes_; }
  cudaStream_t stream() const { return stream_; }

  // Device bytes one window takes in a batch with `ctx` self-attention positions (cross K/V,
  // KV cache, step buffers), for sizing batches to the free memory.
  size_t bytes_per_slot(int ctx, bool absorbed = false) const;
  // Whether a batch of `slots` windows keeps each window's encoder output and runs the
  // cross-attention with K/V absorbed into the query and output products (cuda::attention_absorbed:
  // half the bytes a step, no per-layer cross K/V in the encoder) instead of per-layer K/V.
  // float16/bfloat16 only; batches of at least absorb_min_slots() windows (0: never), by default
  // kAbsorbMinSlots. SPEECHCORE_CROSS_ABSORB=<slots> at load sets it (0 turns it off).
  // H200, large-v3 bf16, 100 tokens a window through the engine (decode_step_gpu.py): batch 128
  // 1,699.5 ms absorbed vs 1,877.8 ms; batch 64 1,031.7 vs 1,077.6; batch 16 556.7 vs 462.0 (few
  // rows leave the kernel's per-block start-up exposed; one row: 43 us a layer).
  static constexpr int kAbsorbMinSlots = 128;
  bool absorbed_for(int slots) const;
  int absorb_min_slots() const { return absorb_min_slots_; }
  // Device bytes of the encoder's activations for `windows` windows at once.
  size_t encoder_bytes(int windows) const;
  // kv_rows: rows of the self-attention K/V (-1: slots * ctx; 0: none yet, for a caller that
  // sizes a paged pool itself and sets self_kv, block_size, table_stride and block_table).
  WhisperBatchCuda new_batch(int slots, int ctx, int64_t kv_rows = -1) const;

  // Encoder for n windows: mels[i] is host float32 [n_mels, 2 * n_audio_ctx]; window i's cross
  // K/V goes to slot slot0 + i. Runs `chunk` windows per forward pass (>= 1). Enqueued on stream().
  void encode(const float* const* mels, int n, WhisperBatchCuda& batch, int slot0, int chunk) const;
  // The same with window i's cross K/V going to slot slots[i] (any distinct slots).
  void encode(const float* const* mels, int n, WhisperBatchCuda& batch, const int* slots, int chunk) const;
  // An encoder lane for up to `windows` windows at once (device memory: encoder_bytes(windows)),
  // staging admissions of up to `admission` windows without waiting for its encoder
  // (SPEECHCORE_LANE_REGIONS=k overrides the staging ring's regions; 1 = one buffer).
  std::unique_ptr<EncoderLane> new_encoder_lane(int windows, int admission) const;
  // The same as encode(mels, n, batch, slots, lane.windows), enqueued on lane.stream after the
  // work already on `after` (slots freed by windows whose last step may still be running); the
  // caller records an event on lane.stream to know when it is done. Returns once the features
  // are staged (the mels may be freed); it waits only for earlier copies out of the staging
  // regions it reuses (see EncoderLane), not for its encoder.
  void encode_async(const float* const* mels, int n, WhisperBatchCuda& batch, const int* slots, EncoderLane& lane,
                    cudaStream_t after) const;

  // Prompt prefill of sequences 0..n-1 (slots slot0..slot0+n-1), each `len` tokens (prompts
  // right-padded to `len`; padded positions compute values nobody reads). ints: device int32
  // [3, n * len]: token ids, positions (j for token j) and KV-cache rows (slot * ctx + j). Writes
  // K/V positions [0, len) of each slot and returns the final hidden states [n * len, d]
  // (device, before the final layer norm). Enqueued on stream().
  // slots (host, optional): sequence i's cross-attention K/V are slot slots[i]'s (any distinct
  // slots; slot0 is then ignored), else slot slot0 + i. With slots, ints holds two more arrays
  // ([5, n * len]): each row's slot (slots[i] for the rows of sequence i) and n_audio_ctx, so the
  // cross-attention of all rows runs as one call of the decode kernel (one query per row, K/V
  // through the slot map) instead of one call per sequence.
  // capture (optional, n == 1): the alignment heads' scores (CrossScoresCuda).
  Tensor prefill(WhisperBatchCuda& batch, const int32_t* ints, int n, int len, int slot0 = 0,
                 const int* slots = nullptr, const CrossScoresCuda* capture = nullptr) const;

  // One decoder step for n rows (n <= slots), inputs in batch.step_array(0..4) (device int32 [n]
  // each): token id, position, KV-cache row (slot * ctx + position) the new K/V go to, slot, and
  // self-attention length (position + 1). Hidden states land in batch.x[0, n). Allocates nothing.
  // With decode_fusion() and n <= the GEMM runner's gemv rows the step runs fused: layer norms
  // inside the following products, the QKV product writing K/V into the cache, 8 kernels per
  // layer; same results bit for bit as the unfused sequence.
  // Opt-in (SPEECHCORE_PERSISTENT_STEP=1 at load, experimental: slower than the fused step on the
  // H200 so far): one row runs the whole decoder in one persistent kernel
  // (cuda/include/speechcore_cuda/decoder_step.h), equal to the fused step up to the attention's
  // rounding.
  void step(WhisperBatchCuda& batch, int n) const;
  // Whether one-row steps run as one persistent kernel.
  bool persistent_step() const { return persist_plan_.grid > 0; }

  // Fused decode steps for small batches. Default ON since session 6: once each fused gemv block
  // loads the layer norm's gamma/beta before the dependency wait and computes the statistics
  // over all its warps, the fused step beat the unfused one on the H200 (large-v3 bf16, batch 1,
  // CUDA graphs, PDL: 180.0 ms against 186.7 per 100-token window, same machine; the session-3
  // fused kernel had been slower, 1.695 against 1.656 ms a step). SPEECHCORE_DECODE_FUSION=0
  // turns it off (also in logits(): final layer norm inside the product).
  bool decode_fusion() const { return decode_fusion_; }
  // One-row fused steps run the cross-attention's query product inside its attention kernel.
  bool cross_query_fused() const { return decode_fusion_ && cross_query_fused_; }
  // ... and the self-attention's layer norm + QKV product inside its attention kernel.
  bool self_qkv_fused() const { return decode_fusion_ && self_qkv_fused_; }
  // ... and both attention output products inside those kernels too (cuda::OutputFold: int64
  // fixed-point sums, 4 kernels a layer).
  bool out_fold() const { return self_qkv_fused() && cross_query_fused() && out_fold_; }
  // Windows encoded so far (diagnostics).
  uint64_t encoder_passes() const { return encoder_passes_.load(std::memory_order_relaxed); }
  void set_decode_fusion(bool on) { decode_fusion_ = on; }

  // Float32 logits of m rows of hidden states (final layer norm + tied output projection):
  // logits[i] for row rows[i] of x (device int32 [m]; null = rows 0..m-1), into batch.logits
  // starting at row `out_row`. Allocates nothing when rows is null and x is batch.x.
  void logits(WhisperBatchCuda& batch, const Tensor& x, const int32_t* rows, int m, int out_row) const;

 private:
  struct Attn {
    Tensor ln_g, ln_b, qkv_w, qkv_b, kv_w, kv_b, out_w, out_b;
    Tensor out_b_absorbed;  // cross-attention: out_b + out_w b_v (V's bias through the output product)
  };
  struct Ffn {
    Tensor ln_g, ln_b, fc1_w, fc1_b, fc2_w, fc2_b;
  };
  struct EncLayer {
    Attn self_attn;
    Ffn ffn;
  };
  struct DecLayer {
    Attn self_attn, cross_attn;
    Ffn ffn;
  };

  // Where encode_chunk runs: the model's stream, cuBLASLt runner and pooled scratch, or a lane's.
  struct EncodeCtx {
    cudaStream_t stream;
    cuda::GemmRunner* gemm;
    EncoderLane* lane;  // null: scratch() tensors and upload()
  };
  Tensor upload(const float* host, std::vector<int64_t> shape) const;  // float32 host -> device dtype_
  Tensor scratch(int64_t rows, int64_t cols) const;
  void linear(const void* x, int64_t m, const Tensor& w, const Tensor& b, void* y, bool accumulate) const;
  void linear_gelu(const void* x, int64_t m, const Tensor& w, const Tensor& b, void* y) const;  // gelu(x w^T + b)
  void* at(const Tensor& t, int64_t elements) const;  // element offset into a device tensor of dtype_
  // slots: window i's slot (null: slot0 + i, one product per layer for all windows).
  void setup_persistent_step();  // plan, layer table and workspace of the persistent step
  // Absorbed cross-attention of `rows` query rows q [rows, d] (row stride d) of decoder layer li
  // into att [rows, d]: qa = per-head q W_k,h, attention over the slots' encoder outputs, per-head
  // W_v,h products. Rows reach slots through kv_index (device int32 [rows]) or row / rows_per_slot
  // from slot `slot0`; lens: device int32 [rows] or null (all n_audio_ctx). The caller adds
  // out_w with out_b_absorbed.
  void cross_absorbed(const WhisperBatchCuda& b, size_t li, const void* q, int64_t rows, const int32_t* lens,
                      const int32_t* kv_index, int rows_per_slot, int slot0, void* qa, void* za, void* att,
                      void* scratch) const;
  void encode_chunk(const float* const* mels, int n, WhisperBatchCuda& batch, int slot0, const int* slots,
                    const EncodeCtx& ec) const;

  WhisperConfig config_;
  cuda::DataType dtype_;
  cudaStream_t stream_ = nullptr;
  std::unique_ptr<cuda::GemmRunner> gemm_;
  bool decode_fusion_ = true;
  mutable std::atomic<uint64_t> encoder_passes_{0};
  // Cross-attention decode issues its first K/V loads before the programmatic-launch wait (the
  // encoded windows' K/V are not written during a step): cuda::attention_decode's kv_static.
  // SPEECHCORE_CROSS_PREFETCH=0 at load turns it off (measurements; the results are the same).
  bool cross_prefetch_ = true;
  // One-row fused steps in float16/bfloat16: the cross-attention's layer norm, query product
  // and attention in one kernel (cuda::cross_query_attention). On by default since session 16
  // (H200, large-v3 bf16, batch 1: 147.4 / 148.1 ms a window against 157.0 without, same call);
  // SPEECHCORE_CROSS_QUERY_FUSED=0 at load turns it off; off where the kernel does not apply
  // (cuda::cross_query_attention_supported: half precision, head size 64, compute capability 9).
  bool cross_query_fused_ = true;
  // The same for the self-attention (cuda::self_qkv_attention; 150.5 / 148.3 against 155.5 ms):
  // SPEECHCORE_SELF_QKV_FUSED=0 turns it off.
  bool self_qkv_fused_ = true;
  // The two attention output products folded into the one-kernel sub-layers, their sums kept as
  // fixed point until fc2's epilogue (cuda::OutputFold, cuda::ResidualTerms): opt-in
  // (SPEECHCORE_OUT_FOLD=1 at load) until measured on the GPU; off where fc1/fc2 do not fit the
  // row-prefetching product (cuda::gemv_row_prefetch_fits).
  bool out_fold_ = false;
  // Rows up to which a fused step runs the one-kernel attention sub-layers (a cluster per row and
  // head, each row's cluster reading the weights again, from L2 after the first): 1 by default;
  // SPEECHCORE_SUBLAYER_ROWS=k at load (1 to 8; the fused step itself runs up to
  // GemmRunner::gemv_max_rows() rows, SPEECHCORE_GEMV_MAX_M) to measure multi-row steps.
  int sublayer_rows_ = 1;
  // prefill() with slots: the prompts' cross-attention as one decode-kernel call over all rows
  // (SPEECHCORE_PREFILL_CROSS_ROWS=0 at load: one prefill-kernel call per sequence).
  bool prefill_cross_rows_ = true;
  int absorb_min_slots_ = kAbsorbMinSlots;
  // The persistent one-row step: its plan (grid 0: not used), the layers' weight pointers on the
  // device and its workspace (barrier counters, cross-attention split states).
  cuda::PersistentStepPlan persist_plan_;
  Tensor persist_layers_, persist_ws_;
  size_t weight_bytes_ = 0;
  Tensor conv1_w_, conv1_b_, conv2_w_, conv2_b_, enc_pos_, enc_ln_g_, enc_ln_b_;
  Tensor tok_emb_, dec_pos_, dec_ln_g_, dec_ln_b_;
  std::vector<EncLayer> enc_;
  std::vector<DecLayer> dec_;
};

}  // namespace speechcore::models::whisper
