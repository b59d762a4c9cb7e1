// Decoding of one 30 s window: Whisper's logits rules (suppressed tokens, suppress-blank,
// timestamp rules) and greedy selection, computing the window's scores the way
// CTranslate2's Whisper generate does.
#pragma once

#include <vector>

#include "models/whisper/whisper_model.h"

namespace speechcore::runtime {

// Token ids the logits rules need.
struct WhisperSpecialTokens {
  int eot = -1;
  int sot = -1;
  int no_timestamps = -1;
  int no_speech = -1;
  int timestamp_begin = -1;
  int timestamp_end = -1;  // last timestamp token (vocab_size - 1)
};

struct WindowOptions {
  std::vector<int> suppress_tokens;        // never sampled
  std::vector<int> suppress_tokens_begin;  // not sampled as the first token (suppress_blank)
  int max_initial_timestamp_index = 50;    // -1 = no limit
  int max_length = 448;                    // prompt + generated tokens; generation stops at min(max_length/2, max_length - prompt + 1) tokens
};

struct WindowResult {
  std::vector<int> tokens;     // generated tokens, end-of-text excluded
  double sum_logprob = 0.0;    // including the end-of-text token when it was generated
  float avg_logprob = 0.0f;    // sum_logprob / (tokens.size() + 1), as faster-whisper reports it
  float no_speech_prob = 0.0f; // P(<|nospeech|>) at the start-of-transcript position
};

// The prompt must contain the start-of-transcript token; decoding starts after its last token.
// Timestamp rules apply unless the prompt ends with <|notimestamps|>.
WindowResult decode_window_greedy(const models::whisper::WhisperModel& model,
                                  const models::whisper::CrossKV& cross, const std::vector<int>& prompt,
                                  const WhisperSpecialTokens& special, const WindowOptions& options);

// Applies the logits rules for decoding step `step` (0 = first generated token) given the
// tokens generated so far. logits: [vocab] (modified in place: disallowed tokens -> -inf).
void apply_whisper_logits_rules(float* logits, int vocab, int step, const std::vector<int>& generated,
                                bool timestamps, const WhisperSpecialTokens& special,
                                const WindowOptions& options);

}  // namespace speechcore::runtime
