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

// One recording handed to Model::transcribe_batch, not copied: `num_frames` frames of
// `channels` interleaved float samples at `sample_rate` Hz (valid for the call).
struct AudioRef {
  const float* pcm = nullptr;
  size_t num_frames = 0;
  int sample_rate = 16000;
  int channels = 1;
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

  // Transcribes many recordings with the same options; result i belongs to audio[i] and equals
  // transcribe() of that recording alone. Every recording is checked and prepared (mono,
  // 16 kHz) first; then all of them advance together through the long-form loop, the next
  // 30 s window of up to `max_batch` unfinished recordings (in input order) running as one
  // batch on the backend. An empty list returns an empty vector. Throws speechcore::Error for
  // a bad option or max_batch < 1, and for a bad recording with a message that starts with
  // "audio item <index>: ".
  std::vector<Transcription> transcribe_batch(const std::vector<AudioRef>& audio,
                                              const TranscribeOptions& options = TranscribeOptions{},
                                              int max_batch = 64) const;

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
