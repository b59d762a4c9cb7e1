// Whisper weights in the layout our kernels use (float32, fused projections), loaded from a
// CTranslate2 or a Hugging Face transformers checkpoint and validated against the weight
// spec before any conversion. Immutable after load; shared by all requests.
#pragma once

#include <string>
#include <vector>

#include "speechcore/tensor.h"

namespace speechcore::models::whisper {

struct WhisperConfig {
  int n_mels = 80;
  int d_model = 0;
  int encoder_layers = 0;
  int decoder_layers = 0;
  int encoder_heads = 0;
  int decoder_heads = 0;
  int vocab_size = 0;
  int n_audio_ctx = 1500;   // encoder positions (30 s at 20 ms)
  int n_text_ctx = 448;     // decoder positions
  std::vector<int> suppress_ids;        // checkpoint's default suppress list (may be empty)
  std::vector<int> suppress_ids_begin;  // suppressed at the first sampled token (may be empty)
  std::vector<std::pair<int, int>> alignment_heads;
};

struct AttentionWeights {
  Tensor ln_gamma, ln_beta;  // [d]
  Tensor qkv_w, qkv_b;       // self: [3d, d], [3d]; cross: q only [d, d], [d]
  Tensor kv_w, kv_b;         // cross only: [2d, d], [2d]
  Tensor out_w, out_b;       // [d, d], [d]
};

struct FfnWeights {
  Tensor ln_gamma, ln_beta;  // [d]
  Tensor fc1_w, fc1_b;       // [4d, d], [4d]
  Tensor fc2_w, fc2_b;       // [d, 4d], [d]
};

struct EncoderLayer {
  AttentionWeights self_attn;
  FfnWeights ffn;
};

struct DecoderLayer {
  AttentionWeights self_attn;
  AttentionWeights cross_attn;
  FfnWeights ffn;
};

struct WhisperWeights {
  WhisperConfig config;
  std::string format;  // "ctranslate2" | "transformers"
  // encoder
  Tensor conv1_w, conv1_b;   // [d, n_mels, 3], [d]
  Tensor conv2_w, conv2_b;   // [d, d, 3], [d]
  Tensor enc_pos;            // [n_audio_ctx, d]
  std::vector<EncoderLayer> enc_layers;
  Tensor enc_ln_gamma, enc_ln_beta;
  // decoder
  Tensor tok_emb;            // [vocab, d] (also the output projection)
  Tensor dec_pos;            // [n_text_ctx, d]
  std::vector<DecoderLayer> dec_layers;
  Tensor dec_ln_gamma, dec_ln_beta;

  size_t bytes() const;
};

// Loads a model directory: model.bin (CTranslate2) or model.safetensors / an index
// (transformers). Throws Error(kNotFound / kInvalidModel) naming what is missing or wrong.
WhisperWeights load_whisper_weights(const std::string& model_dir);

}  // namespace speechcore::models::whisper
