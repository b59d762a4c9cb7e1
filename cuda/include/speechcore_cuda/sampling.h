// Whisper's logits rules and greedy selection on the device, for a batch of sequences decoded
// in lock-step: runtime::apply_whisper_logits_rules + the greedy pick and its log-probability
// of runtime::decode_window_greedy (cpp/src/runtime/whisper_decoding.cc, as CTranslate2):
//  1. suppress_tokens -> -inf; at step 0 also suppress_tokens_begin;
//  2. with timestamps: <|notimestamps|> -> -inf; step 0: text disallowed (the first token is a
//     timestamp) and timestamps after timestamp_begin + max_initial_timestamp_index disallowed;
//     later: after a timestamp pair only text; after a single timestamp only a timestamp
//     >= it or end-of-text; after text only timestamps >= the last one generated; then, unless
//     a pair was just closed, when log(sum P(timestamps)) > max log P(text) only timestamps;
//  3. log-softmax of the masked logits; argmax (lowest index among equal maxima).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace speechcore::cuda {

struct WhisperRuleParams {
  int eot = -1;                           // <|endoftext|>
  int no_timestamps = -1;                 // <|notimestamps|>
  int timestamp_begin = -1;               // <|0.00|>
  int timestamp_end = -1;                 // last timestamp id (inclusive; vocab - 1)
  int max_initial_timestamp_index = 50;   // -1: no limit
  bool timestamps = true;                 // timestamp rules on (prompt does not end in <|notimestamps|>)
};

// One decoding step for `batch` sequences; one block per sequence.
// logits: [batch, vocab] float32 (the rules' masks are written into it: -inf);
// generated: [rows, max_steps] int32; sequence b's history is row r = rows[b] (rows: device int32
// [batch], trusted; null = identity, r = b): generated[r, t] for t < step[b] are the tokens generated
// so far (the prompt excluded); with `append`, the chosen token is stored at generated[r, step[b]]
// (when step[b] < max_steps), so the history stays on the device between steps;
// step: [batch] int32 in [0, max_steps] (trusted; clamped);
// suppress / suppress_begin: int32 lists (ids outside [0, vocab) are ignored);
// next_token: [batch] int32 (the argmax of the masked logits);
// token_logprob: [batch] float32 (its log-softmax value, float(double(logit) - double(lse))).
// All pointers are device pointers; nothing is copied to the host.
void whisper_greedy_step(float* logits, int32_t* generated, const int32_t* rows, bool append, const int32_t* step,
                         const int32_t* suppress, int n_suppress, const int32_t* suppress_begin, int n_suppress_begin,
                         const WhisperRuleParams& p, int32_t* next_token, float* token_logprob, int batch, int vocab,
                         int max_steps, cudaStream_t stream);

// The same rules, then a draw instead of the argmax (runtime::sample_token's arithmetic on the
// device): the masked row's log-softmax scaled by 1 / temperature, softmax, and the first
// token whose cumulative probability exceeds uniform[b] * total (uniform: device float64
// [batch] in [0, 1), SampleRng::uniform; tokens of probability 0 are never drawn). The drawn
// token's log-probability at temperature 1 goes to token_logprob (a candidate's score).
void whisper_sample_step(float* logits, int32_t* generated, const int32_t* rows, bool append, const int32_t* step,
                         const int32_t* suppress, int n_suppress, const int32_t* suppress_begin, int n_suppress_begin,
                         const WhisperRuleParams& p, const double* uniform, float temperature, int32_t* next_token,
                         float* token_logprob, int batch, int vocab, int max_steps, cudaStream_t stream);

// out[b] = softmax(logits[b, :])[no_speech_id] (computed as float(exp(double(l) - double(lse)))).
// logits: [batch, vocab] float32 (the raw logits at the start-of-transcript position), out: [batch].
void no_speech_prob(const float* logits, int batch, int vocab, int no_speech_id, float* out, cudaStream_t stream);

}  // namespace speechcore::cuda
