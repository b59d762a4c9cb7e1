// Language detection for multilingual Whisper checkpoints, as faster-whisper 1.2.1 /
// CTranslate2 do it: the decoder reads <|startoftranscript|> alone over a 30 s window's encoder
// output, and the softmax of the logits of the language tokens (only those) gives each
// language's probability.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "speechcore/tensor.h"
#include "io/tokenizer.h"
#include "runtime/whisper_decoding.h"
#include "speechcore/results.h"

namespace speechcore::runtime {

// (code, probability) of every language token of `tok`, most likely first, for one window
// mel: [n_mels, runner.n_frames()] host float32 (zero-padded). Runs on the runner's backend
// (WindowRunner::prompt_logits). Throws kInvalidArgument for an English-only tokenizer.
std::vector<std::pair<std::string, float>> language_probs(const WindowRunner& runner, const io::Tokenizer& tok,
                                                          const float* mel);

// faster-whisper's detect_language over features [n_mels, frames] (host float32, the whole
// recording's log-mel including its last padding frame) from frame `start`: at most `segments`
// windows of `window` frames (0: the model's 30 s; fewer with chunk_length), each zero-padded
// to 30 s; the first whose top probability exceeds `threshold`
// decides; when none does, the language ranked first in the most windows (the earliest on a
// tie) with its highest probability. all_language_probs: the last window scored.
LanguageDetection detect_language(const WindowRunner& runner, const io::Tokenizer& tok, const Tensor& features,
                                  int64_t start, int segments, float threshold, int window = 0);

}  // namespace speechcore::runtime
