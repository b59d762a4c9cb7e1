// Decoding of one 30 s window: Whisper's logits rules (suppressed tokens, suppress-blank,
// timestamp rules, repetition penalty, no-repeat n-grams) and the window's scores, computed
// the way CTranslate2's Whisper generate does. Greedy decoding is in whisper_greedy.h, beam
// search and sampling in whisper_beam.h.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "models/whisper/whisper_model.h"
#include "speechcore/engine.h"

namespace speechcore::engine {
class StepRunner;
struct StepRunnerConfig;
}

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
  // Search (TranscribeOptions has the meanings): temperature 0 decodes greedily (beam_size 1)
  // or with a beam search; temperature > 0 samples num_hypotheses candidates and keeps the best.
  int beam_size = 1;
  float patience = 1.0f;
  float length_penalty = 1.0f;
  float repetition_penalty = 1.0f;
  int no_repeat_ngram_size = 0;
  float temperature = 0.0f;
  int num_hypotheses = 1;                  // candidates sampled at temperature > 0 (best_of)
  uint64_t seed = 0;                       // random stream of this window attempt (sampling only)
  bool keep_encoder_output = false;        // return it in WindowResult::encoder_output (word timestamps, fallback)
  // Per-window language detection (TranscribeOptions::multilingual): the prompt's language
  // token (right after <|startoftranscript|>) is replaced by the one of these with the largest
  // logit after <|startoftranscript|> alone, on the window's encoder output. Empty: off.
  std::vector<int> language_tokens;
};

// The decoder rows a window's search keeps (beams at temperature 0, sampled candidates above).
inline int search_rows(const WindowOptions& o) { return o.temperature > 0.0f ? o.num_hypotheses : o.beam_size; }

// What a WindowOptions asks beyond plain greedy decoding; a backend reports what it supports
// (WindowRunner::decoding_support) and make_plan rejects the rest with kUnsupported.
struct DecodingSupport {
  bool beam_search = false;  // beam_size > 1 at temperature 0
  bool sampling = false;     // temperature > 0 (with best_of candidates)
  bool penalties = false;    // repetition_penalty != 1, no_repeat_ngram_size > 0, length_penalty != 1
  bool word_timestamps = false;  // WindowRunner::align
  bool prefix = false;       // prompts ending in forced tokens (TranscribeOptions::prefix; PromptLayout::forced)
  bool window_language = false;  // WindowOptions::language_tokens (per-window language detection)
};

struct WindowResult {
  std::vector<int> tokens;     // generated tokens, end-of-text excluded
  double sum_logprob = 0.0;    // including the end-of-text token when it was generated (summed in float, as CTranslate2)
  // sum_logprob / (tokens.size() + 1), recovered from the length-normalized score the way
  // faster-whisper does (NaN for an empty window, as there)
  double avg_logprob = 0.0;
  float no_speech_prob = 0.0f; // P(<|nospeech|>) at the start-of-transcript position
  // WindowOptions::language_tokens: the language token the window was decoded in (-1: the
  // prompt's own, no detection).
  int language_token = -1;
  // The window's encoder output, kept when WindowOptions::keep_encoder_output asked for it on a
  // backend that can (the CPU), so WindowRunner::align need not encode the window again.
  std::shared_ptr<const models::whisper::CrossKV> encoder_output;
};

// Word alignment of a window's text (WindowRunner::align): CTranslate2's Whisper align.
struct AlignRequest {
  const float* mel = nullptr;          // [n_mels, n_frames()] host float32 (the window's features)
  const models::whisper::CrossKV* encoder_output = nullptr;  // the window's, if kept (else encoded from mel)
  std::vector<int> sot_sequence;       // start-of-transcript sequence (no previous-text prompt)
  std::vector<int> text_tokens;        // the text tokens to align (timestamps and end-of-text excluded)
  int64_t num_frames = 0;              // mel frames of content in the window (<= n_frames())
};
struct Alignment {
  // DTW path over (text row, encoder frame): row 0 is the no-timestamps position (it predicts
  // text_tokens[0]), row text_tokens.size() the end-of-text one; empty when num_frames < 2.
  std::vector<std::pair<int, int>> path;
  std::vector<float> text_token_probs;  // P(text_tokens[t]) over the text vocabulary (ids < eot)
};

// Checks of a window's prompt shared by every backend: index of the start-of-transcript token,
// whether timestamp rules apply, and the number of tokens that may be generated.
//
// As CTranslate2: the prompt's task part ends after the tokens following <|startoftranscript|>
// that are special tokens up to <|notimestamps|> (language, task, notimestamps); tokens after it
// are a forced prefix (faster-whisper's prefix: <|0.00|> when timestamps are on, then the
// prefix text). CTranslate2 forces them one step at a time with score 0; a backend supporting
// them (DecodingSupport::prefix) runs them with the prompt instead (the same model inputs), then
// decodes `max_new` free tokens: the first gets no initial-timestamp rule (only suppress_blank),
// penalties see the prefix plus the generated tokens, the window's tokens are the prefix then
// the generated ones, and its log-prob sum counts the generated ones only.
struct PromptLayout {
  int sot_index = 0;
  bool timestamps = true;  // the task part does not end in <|notimestamps|>
  int max_new = 0;         // free tokens that may be generated after the prefix (<= 0: none)
  int forced = 0;          // forced prefix tokens at the end of the prompt
  int max_total = 0;       // prefix + generated tokens at most (CTranslate2's max_length)
};
PromptLayout prompt_layout(const std::vector<int>& prompt, const WhisperSpecialTokens& special,
                           const WindowOptions& options);

// Windows decoded by the search over rows (whisper_beam.h) rather than the plain greedy loop:
// beams, sampling, and greedy windows with penalties, a length penalty or a forced prefix
// (greedy with the rules on the host over the rows' logits; the CUDA device-side pick has
// neither penalties nor prefixes, and the CPU shares the path so CI covers it).
inline bool needs_search(const WindowOptions& o, const PromptLayout& layout) {
  return o.temperature > 0.0f || o.beam_size > 1 || o.repetition_penalty != 1.0f || o.no_repeat_ngram_size > 0 ||
         o.length_penalty != 1.0f || layout.forced > 0;
}

// One window of a batch: its features, prompt and options (the pointers stay valid for the call).
struct WindowRequest {
  const float* mel = nullptr;          // [n_mels, n_frames()] host float32
  std::vector<int> prompt;
  WindowOptions options;
  // The window's encoder output from an earlier attempt (a temperature fallback decodes the
  // same window again): a backend that keeps encoder outputs (the CPU) decodes against it
  // instead of encoding mel again, as faster-whisper reuses its encoder output. Null: encode.
  std::shared_ptr<const models::whisper::CrossKV> encoder_output;
};

// Runs one 30 s window (encoder + greedy decoding) on some backend. Implementations are
// immutable after construction and safe to call from several threads.
class WindowRunner {
 public:
  virtual ~WindowRunner() = default;
  virtual const models::whisper::WhisperConfig& config() const = 0;
  int n_frames() const { return 2 * config().n_audio_ctx; }  // mel frames per window (3000)
  // mel: [n_mels, n_frames()] host float32.
  virtual WindowResult run(const float* mel, const std::vector<int>& prompt, const WhisperSpecialTokens& special,
                           const WindowOptions& options) const = 0;
  // Runs many windows; result i belongs to request i and equals run() on that request alone
  // (backends batch the work; the default runs them one by one). Every prompt is checked
  // before any window runs.
  virtual std::vector<WindowResult> run_batch(const std::vector<WindowRequest>& requests,
                                              const WhisperSpecialTokens& special) const {
    for (const WindowRequest& r : requests) prompt_layout(r.prompt, special, r.options);
    std::vector<WindowResult> out;
    out.reserve(requests.size());
    for (const WindowRequest& r : requests) out.push_back(run(r.mel, r.prompt, special, r.options));
    return out;
  }
  // Log-mel features [n_mels, frames] (host float32) of a whole 16 kHz mono recording, as
  // io::log_mel_spectrogram with the model's n_mels and the default padding. The default runs
  // on the CPU; the CUDA backend computes them on the GPU.
  virtual Tensor log_mel(const std::vector<float>& samples) const;
  // A runner for the engine's step-by-step decoding (continuous batching) over this backend's
  // model, for up to max_windows windows at once; kUnsupported where the backend has none.
  virtual std::unique_ptr<engine::StepRunner> make_step_runner(const engine::StepRunnerConfig& config) const;
  virtual std::string device() const = 0;
  virtual std::string compute_type() const = 0;
  // The search features run() / run_batch() / make_step_runner() implement; options needing
  // others are rejected (kUnsupported) before any window runs, never decoded greedily.
  // The default: plain greedy decoding only.
  virtual DecodingSupport decoding_support() const { return {}; }
  // Cross-attention alignment of a window's text (word timestamps): the decoder runs over
  // sot_sequence + no-timestamps + text + end-of-text and the alignment heads' cross-attention
  // (softmax over the content frames, standardized per frame over the tokens, median filter of
  // width 7 over frames, mean over heads) goes through DTW, as CTranslate2's Whisper align.
  // kUnsupported where the backend has none (decoding_support().word_timestamps).
  virtual Alignment align(const AlignRequest& request, const WhisperSpecialTokens& special) const;
  // Raw float32 logits [vocab] at the last prompt position (tests compare backends with it).
  virtual std::vector<float> prompt_logits(const float* mel, const std::vector<int>& prompt) const = 0;
  // Encoder passes run so far (windows encoded; diagnostics and tests).
  virtual uint64_t encoder_passes() const = 0;
};

// The CPU backend: models::whisper::WhisperModel.
std::unique_ptr<WindowRunner> make_cpu_window_runner(std::shared_ptr<const models::whisper::WhisperModel> model);

#ifdef SPEECHCORE_WITH_CUDA
// The CUDA backend (window_runner_cuda.cc): weights uploaded in compute_type ("auto" = float16,
// "float16", "bfloat16", "float32"); fills info's weight_bytes (device bytes of the weights),
// decoder_step and cross_absorb_min_windows.
std::unique_ptr<WindowRunner> make_cuda_window_runner(const models::whisper::WhisperWeights& weights,
                                                      const std::string& compute_type, speechcore::ModelInfo* info = nullptr);
bool cuda_device_available();
#endif


// Adds one greedy pick to a window's result, scored as CTranslate2 does (the log-prob of an
// end-of-text pick counts, the token is not kept); true when the window is finished
// (end-of-text, or max_new tokens generated). Every backend's decoding loop goes through it;
// finish_window() then sets avg_logprob.
bool add_pick(WindowResult& result, int token, float logprob, int eot, int max_new);
void finish_window(WindowResult& result, float length_penalty = 1.0f);

// CTranslate2's final score of a hypothesis: sum of log-probs / length^length_penalty (float).
float normalized_score(float sum_logprob, size_t length, float length_penalty);
// faster-whisper's average log-prob recovered from that score: score * length^lp / (length + 1).
double average_logprob(float score, size_t length, float length_penalty);

// The options' needs in DecodingSupport terms; when `support` lacks one, throws kUnsupported
// naming the option and the backend (`device`).
void check_decoding_support(const WindowOptions& options, const DecodingSupport& support, const std::string& device);

// CTranslate2's repetition penalty and no-repeat-n-gram rule on one row of logits, given the
// tokens generated so far in this window (run before apply_whisper_logits_rules).
void apply_penalties(float* logits, int vocab, const std::vector<int>& generated, const WindowOptions& options);
// The same with the window's forced prefix first (the tokens CTranslate2's penalties see).
void apply_penalties(float* logits, int vocab, const std::vector<int>& forced, const std::vector<int>& generated,
                     const WindowOptions& options);

// The forced prefix tokens at the end of `prompt` (layout.forced of them).
std::vector<int> forced_tokens(const std::vector<int>& prompt, const PromptLayout& layout);
// A window that ends inside its forced prefix (layout.max_new <= 0 with a prefix): CTranslate2
// returns the first max_total prefix tokens with score 0.
WindowResult prefix_only_result(const std::vector<int>& prompt, const PromptLayout& layout, float no_speech_prob,
                                float length_penalty);

// Applies the logits rules for decoding step `step` (0 = first generated token) given the
// tokens generated so far. logits: [vocab] (modified in place: disallowed tokens -> -inf).
// after_prefix: the window's prompt ends in a forced prefix (PromptLayout::forced > 0); step 0
// then gets no initial-timestamp rule, as in CTranslate2.
void apply_whisper_logits_rules(float* logits, int vocab, int step, const std::vector<int>& generated,
                                bool timestamps, const WhisperSpecialTokens& special,
                                const WindowOptions& options, bool after_prefix = false);

}  // namespace speechcore::runtime
