// Whisper transcription of whole recordings: the sequential long-form algorithm (30 s
// windows, seek by the last timestamp, condition on the previous text) of faster-whisper,
// written as a per-recording state machine so that the windows of many recordings can run
// through WindowRunner::run_batch together.
#pragma once

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
  static constexpr int kDefaultMaxBatch = 64;

  WhisperTranscriber(std::unique_ptr<WindowRunner> runner, std::shared_ptr<const io::Tokenizer> tokenizer);

  // samples: mono 16 kHz float32. A batch of one: the same code as transcribe_batch.
  Transcription transcribe(const std::vector<float>& samples, const TranscribeOptions& options) const;

  // Transcribes many recordings (each mono 16 kHz float32) with the same options. All of them
  // advance together: each round takes the next 30 s window of the first `max_batch`
  // unfinished recordings (in input order) and runs them with one runner().run_batch call.
  // Result i equals transcribe(samples[i], options). Options are checked once, before any
  // window runs; an empty list returns an empty vector. Throws kInvalidArgument when
  // max_batch < 1.
  std::vector<Transcription> transcribe_batch(const std::vector<std::vector<float>>& samples,
                                              const TranscribeOptions& options,
                                              int max_batch = kDefaultMaxBatch) const;

  const io::Tokenizer& tokenizer() const { return *tokenizer_; }
  const WhisperSpecialTokens& special_tokens() const { return special_; }
  const WindowRunner& runner() const { return *runner_; }

 private:
  // The long-form loop over recordings that are not copied: both entry points end here.
  std::vector<Transcription> run(const std::vector<const std::vector<float>*>& samples,
                                 const TranscribeOptions& options, size_t max_batch) const;

  std::unique_ptr<WindowRunner> runner_;
  std::shared_ptr<const io::Tokenizer> tokenizer_;
  WhisperSpecialTokens special_;
};

// len(text) / len(zlib.compress(text)) over the UTF-8 bytes, as faster-whisper computes it.
float compression_ratio(const std::string& text);

}  // namespace speechcore::runtime
