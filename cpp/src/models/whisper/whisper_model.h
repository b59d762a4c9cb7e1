// Whisper encoder-decoder forward passes on the CPU. The model (weights) is immutable and
// shared; per-request state (self-attention KV cache, cross-attention K/V) lives in
// DecoderState / CrossKV objects owned by the caller.
#pragma once

#include <atomic>
#include <memory>
#include <vector>

#include "core/thread_pool.h"
#include "core/workspace.h"
#include "models/whisper/whisper_weights.h"
#include "ops/ops.h"

namespace speechcore::models::whisper {

// Encoder output projected to each decoder layer's cross-attention keys and values, computed
// once per 30 s window and read by every decoding step.
struct CrossKV {
  std::vector<Tensor> kv;  // per decoder layer: [n_audio_ctx, 2 * d_model] (K | V)
};

// Self-attention cache of one sequence.
struct DecoderState {
  std::vector<Tensor> k, v;  // per decoder layer: [n_text_ctx, d_model]
  int length = 0;            // positions filled
  // Per-step scratch (activations of one decode() call), reset at every step: after the first
  // steps it holds the high-water mark and a step allocates nothing.
  std::unique_ptr<core::Workspace> workspace;
};

// Self-attention caches of several sequences of one window decoded in lock step (the beams of
// a beam search, the candidates of best_of sampling): all rows have the same length and read
// the same CrossKV (one encoder output, never copied per row).
struct BatchDecoderState {
  std::vector<Tensor> k, v;  // per decoder layer: [capacity * positions, d_model]; row r starts at r * positions
  int capacity = 0;          // rows the buffers hold
  int positions = 0;         // positions per row (<= n_text_ctx)
  int rows = 0;              // rows in use
  int length = 0;            // positions filled in every row
  std::vector<float> saved;  // reorder() scratch
  std::unique_ptr<core::Workspace> workspace;  // per-step activations (as DecoderState)
};

// Cross-attention scores of chosen heads captured by WhisperModel::decode (word alignment):
// q.k / sqrt(head_dim) before the softmax, over all encoder positions.
struct CrossAttentionCapture {
  std::vector<std::pair<int, int>> heads;  // (decoder layer, head)
  std::vector<float> scores;               // [heads.size(), n, n_audio_ctx], written by decode
};

class WhisperModel {
 public:
  WhisperModel(WhisperWeights weights, int threads);

  const WhisperConfig& config() const { return weights_.config; }
  const WhisperWeights& weights() const { return weights_; }
  int n_frames() const { return 2 * weights_.config.n_audio_ctx; }  // mel frames per window (3000)

  // mel: [n_mels, n_frames()] log-mel features of one window.
  CrossKV encode(const float* mel) const;
  uint64_t encoder_passes() const { return encoder_passes_.load(std::memory_order_relaxed); }

  DecoderState new_state() const;

  // Appends `n` tokens to the sequence in `state` (positions state.length ...) and writes the
  // logits of the rows listed in `logit_rows` (indices into tokens) to
  // logits: [logit_rows.size(), vocab_size].
  // With `capture`, also writes the raw cross-attention scores of its heads (the normal path
  // computes nothing more without it).
  void decode(DecoderState& state, const CrossKV& cross, const int* tokens, int n,
              const std::vector<int>& logit_rows, float* logits, CrossAttentionCapture* capture = nullptr) const;

  // Caches for `capacity` rows of up to `positions` tokens each (prompt + generated).
  BatchDecoderState new_batch_state(int capacity, int positions) const;
  // Fills `rows` rows of `to` with copies of the sequence in `from` (a prefilled prompt).
  void broadcast(const DecoderState& from, BatchDecoderState& to, int rows) const;
  // Reorders rows: new row i is old row origins[i] (origins[i] < rows); rows becomes
  // origins.size(). Only rows that change are copied.
  void reorder(BatchDecoderState& state, const std::vector<int>& origins) const;
  // Appends one token per row (tokens: [rows]) at position state.length and writes every
  // row's logits: [rows, vocab_size]. Rows are batched through the linear layers and the
  // cross-attention (all rows query the one CrossKV); self-attention reads each row's cache.
  void decode_rows(BatchDecoderState& state, const CrossKV& cross, const int* tokens, float* logits) const;

 private:
  ops::Context ctx() const { return ops::Context{pool_.get()}; }
  // capture's heads of decoder layer `layer`: q: [n, d] cross queries, kv: [n_audio_ctx, 2d].
  void capture_cross_scores(CrossAttentionCapture& capture, int layer, const float* q, const float* kv,
                            int64_t n) const;

  WhisperWeights weights_;
  std::unique_ptr<core::ThreadPool> pool_;
  mutable std::atomic<uint64_t> encoder_passes_{0};
};

}  // namespace speechcore::models::whisper
