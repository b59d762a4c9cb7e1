// Whisper transcription of one whole recording: the sequential long-form algorithm (30 s
// windows, seek by the last timestamp, condition on the previous text) of faster-whisper,
// driven window by window through the per-recording state machine of runtime/longform.h (the
// Engine drives the same state machine for many recordings at once; Model::transcribe_batch
// runs on the Engine).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "io/tokenizer.h"
#include "models/whisper/whisper_model.h"
#include "runtime/whisper_decoding.h"
#include "speechcore/options.h"
#include "speechcore/results.h"

namespace speechcore::runtime {

class WhisperTranscriber {
 public:
  WhisperTranscriber(std::unique_ptr<WindowRunner> runner, std::shared_ptr<const io::Tokenizer> tokenizer);

  // samples: mono 16 kHz float32. Each window runs as a batch of one through
  // runner().run_batch. Throws kInvalidArgument / kUnsupported for bad options (checked first).
  // progress (optional): Model::transcribe's, after each batch of windows.
  Transcription transcribe(const std::vector<float>& samples, const TranscribeOptions& options,
                           const std::function<void(double, double)>& progress = nullptr) const;

  // Checks and resolves options without transcribing (throws what transcribe() would).
  void check_options(const TranscribeOptions& options) const;

  const io::Tokenizer& tokenizer() const { return *tokenizer_; }
  const WhisperSpecialTokens& special_tokens() const { return special_; }
  const WindowRunner& runner() const { return *runner_; }

 private:
  std::unique_ptr<WindowRunner> runner_;
  std::shared_ptr<const io::Tokenizer> tokenizer_;
  WhisperSpecialTokens special_;
};

// len(text) / len(zlib.compress(text)) over the UTF-8 bytes, as faster-whisper computes it.
float compression_ratio(const std::string& text);

}  // namespace speechcore::runtime
