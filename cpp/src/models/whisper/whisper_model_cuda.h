// Whisper encoder-decoder forward passes on a CUDA GPU (batch 1 per call for now): weights
// uploaded once in the compute type, activations in the same type, float32 accumulation in
// every kernel and GEMM, logits in float32. Mirrors WhisperModel (the CPU twin) call for call.
// Not thread-safe: one caller at a time (the WindowRunner serializes).
#pragma once

#include <cuda_runtime_api.h>

#include <memory>
#include <vector>

#include "models/whisper/whisper_weights.h"
#include "speechcore_cuda/common.h"
#include "speechcore_cuda/gemm.h"

namespace speechcore::models::whisper {

struct CrossKVCuda {
  std::vector<Tensor> kv;  // per decoder layer, device: [n_audio_ctx, 2 * d_model] (K | V)
};

struct DecoderStateCuda {
  std::vector<Tensor> k, v;  // per decoder layer, device: [n_text_ctx, d_model]
  int length = 0;
};

class WhisperModelCuda {
 public:
  WhisperModelCuda(const WhisperWeights& weights, cuda::DataType dtype);
  ~WhisperModelCuda();

  const WhisperConfig& config() const { return config_; }
  cuda::DataType dtype() const { return dtype_; }
  size_t weight_bytes() const { return weight_bytes_; }

  // mel: host [n_mels, 2 * n_audio_ctx] float32.
  CrossKVCuda encode(const float* mel) const;
  DecoderStateCuda new_state() const;
  // As WhisperModel::decode; logits: host [logit_rows.size(), vocab] float32.
  void decode(DecoderStateCuda& state, const CrossKVCuda& cross, const int* tokens, int n,
              const std::vector<int>& logit_rows, float* logits) const;

 private:
  struct Attn {
    Tensor ln_g, ln_b, qkv_w, qkv_b, kv_w, kv_b, out_w, out_b;
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

  Tensor upload(const Tensor& host) const;   // float32 host -> device in dtype_
  Tensor scratch(int64_t rows, int64_t cols) const;
  void linear(const Tensor& x, int64_t m, const Tensor& w, const Tensor& b, Tensor& y, bool accumulate) const;
  void* at(const Tensor& t, int64_t elements) const;  // element offset into a device tensor

  WhisperConfig config_;
  cuda::DataType dtype_;
  cudaStream_t stream_ = nullptr;
  std::unique_ptr<cuda::GemmRunner> gemm_;
  size_t weight_bytes_ = 0;
  Tensor conv1_w_, conv1_b_, conv2_w_, conv2_b_, enc_pos_, enc_ln_g_, enc_ln_b_;
  Tensor tok_emb_, dec_pos_, dec_ln_g_, dec_ln_b_;
  std::vector<EncLayer> enc_;
  std::vector<DecLayer> dec_;
};

}  // namespace speechcore::models::whisper
