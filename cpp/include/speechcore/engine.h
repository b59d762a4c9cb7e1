// speechcore::Model: load a speech model once, transcribe many times (thread-safe: the
// weights are immutable and each call keeps its own decoding state).
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "speechcore/options.h"
#include "speechcore/results.h"

namespace speechcore {

struct ModelInfo {
  std::string architecture;   // "whisper"
  std::string format;         // "ctranslate2" or "transformers"
  std::string path;
  bool multilingual = false;
  int n_mels = 80;
  int d_model = 0;
  int encoder_layers = 0;
  int decoder_layers = 0;
  int vocab_size = 0;
  std::string device;         // where it runs
  std::string compute_type;   // arithmetic precision
  size_t weight_bytes = 0;    // memory held by the weights
};

class Model {
 public:
  // Loads a model directory (CTranslate2/faster-whisper or Hugging Face transformers format).
  // Throws speechcore::Error on a missing, incomplete or corrupt directory or a bad option.
  static std::shared_ptr<Model> load(const std::string& model_dir,
                                     const LoadOptions& options = LoadOptions{});
  ~Model();

  // Transcribes PCM audio: `num_frames` frames of `channels` interleaved float samples at
  // `sample_rate` Hz (mixed down to mono and resampled to 16 kHz inside).
  Transcription transcribe(const float* pcm, size_t num_frames, int sample_rate, int channels,
                           const TranscribeOptions& options = TranscribeOptions{}) const;

  const ModelInfo& info() const;

  // Diagnostics: the raw float32 logits [vocab] after `prompt` for one 30 s window of log-mel
  // features mel: [n_mels, 3000]. Used to compare backends (CPU, CUDA) on identical inputs.
  std::vector<float> prompt_logits(const float* mel, const std::vector<int>& prompt) const;

  struct Impl;
  explicit Model(std::unique_ptr<Impl> impl);
  Impl& impl() const { return *impl_; }

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace speechcore
