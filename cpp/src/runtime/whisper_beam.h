// Beam search and best-of sampling for one 30 s window on the CPU backend, following
// CTranslate2's BeamSearch / GreedySearch with a RandomSampler (the algorithm faster-whisper
// runs), and the factory that picks greedy, beam or sampling decoding from WindowOptions.
//
// Beam search (temperature 0, beam_size B > 1): the prompt is run once; the first step takes
// the 2B best tokens of that one row, later steps the 2B best (cumulative log-prob) of the B
// beams' B x vocab continuations. Of the first B candidates, those ending in end-of-text (or
// all of them at the length limit) become finished hypotheses and are replaced by the next
// candidates that do not end; the B kept candidates' KV caches are gathered from their origin
// beams. The search ends when round(B * patience) hypotheses have finished (or, with
// length_penalty 0, when the best beam has finished); the hypothesis with the best
// sum / length^length_penalty wins. All beams read the window's one CrossKV.
//
// Sampling (temperature T > 0): num_hypotheses candidates are drawn independently, each token
// from softmax(log_probs / T) after the logits rules; a candidate's score is the sum of its
// tokens' log-probs at temperature 1 and the best length-normalized score wins.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "models/whisper/whisper_model.h"
#include "runtime/whisper_decoding.h"

namespace speechcore::runtime {

// Decoding of one window, one decoder step per step() (the first one runs the prompt);
// done() once finished, then take_result(). Holds references to the model and the CrossKV.
class WindowDecoder {
 public:
  virtual ~WindowDecoder() = default;
  virtual void step() = 0;
  virtual bool done() const = 0;
  virtual WindowResult take_result() = 0;
};

// The model side of a lock-step search over one window (beams, or sampled candidates): the
// prompt runs once, its state is copied to each row, then every step decodes all rows.
// Implemented for the CPU model (whisper_beam.cc) and the CUDA one (window_runner_cuda.cc);
// all rows share the window's encoder output.
class SearchRows {
 public:
  virtual ~SearchRows() = default;
  // Runs the prompt; the raw float32 logits of its last position go to logits[0, vocab).
  // Returns P(no-speech) at the start-of-transcript position sot_index (0 when no_speech < 0).
  virtual float prefill(const std::vector<int>& prompt, int sot_index, int no_speech, float* logits) = 0;
  // Makes `rows` rows, each holding the prompt's state (once, after prefill).
  virtual void broadcast(int rows) = 0;
  // One step: row i is fed tokens[i] (i < rows); raw logits [rows, vocab].
  virtual void decode(const int* tokens, int rows, float* logits) = 0;
  // Row k becomes a copy of row origins[k] (k < origins.size(); the others are dropped).
  virtual void reorder(const std::vector<int>& origins) = 0;
  // The tokens the next decode() will feed, announced once the rows for it exist (after
  // broadcast/reorder): a backend that steps the rows of many windows as one batch (the
  // engine's CUDA runner) runs that step before decode() is called, which then only hands
  // back its logits.
  virtual void feed(const int* /*tokens*/, int /*rows*/) {}
  // Sampling on the rows' device (optional; can_draw() says whether the backend has it): after
  // feed(), feed_draws() gives each row's uniform number in [0, 1) (its SampleRng's next) and
  // its generated tokens; decode_draw() then runs the step and, per row, the logits rules of the
  // window's options (not the penalties) given that history, the log-softmax and the draw from
  // softmax(log_probs / temperature) (sample_token's arithmetic), returning the tokens and
  // their log-probs at temperature 1, instead of the logits.
  virtual bool can_draw() const { return false; }
  virtual void feed_draws(const std::vector<double>& /*uniforms*/, const std::vector<const std::vector<int>*>& /*history*/) {}
  virtual void decode_draw(const int* tokens, int rows, int* picked, float* logprobs);
  // Frees the rows' state (the search is over).
  virtual void release() = 0;
};

// Beam search (temperature 0, beam_size > 1), sampling (temperature > 0) or greedy decoding
// with the logits rules on the host (temperature 0, beam_size 1: for backends whose device-side
// greedy pick lacks an option, such as penalties or a forced prefix) over `rows`.
std::unique_ptr<WindowDecoder> make_search_decoder(std::unique_ptr<SearchRows> rows, int vocab,
                                                   std::vector<int> prompt, const WhisperSpecialTokens& special,
                                                   WindowOptions options);

// Positions a search's rows need: the prompt and every token fed back.
int search_positions(const std::vector<int>& prompt, const PromptLayout& layout);

// softmax(logits)[no_speech] over [vocab] (0 when no_speech < 0).
float no_speech_probability(const float* logits, int vocab, int no_speech);

// Greedy (GreedyWindow), beam search or sampling, as `options` ask.
std::unique_ptr<WindowDecoder> make_cpu_window_decoder(const models::whisper::WhisperModel& model,
                                                       const models::whisper::CrossKV& cross, std::vector<int> prompt,
                                                       const WhisperSpecialTokens& special, WindowOptions options);

// A whole window at once.
WindowResult decode_window_cpu(const models::whisper::WhisperModel& model, const models::whisper::CrossKV& cross,
                               const std::vector<int>& prompt, const WhisperSpecialTokens& special,
                               const WindowOptions& options);

// The random stream of one sampled candidate: SplitMix64 over (seed, stream), so every window
// attempt and candidate draws the same numbers however windows are batched or scheduled.
class SampleRng {
 public:
  SampleRng(uint64_t seed, uint64_t stream);
  uint64_t next();
  double uniform();  // [0, 1), 53 random bits
 private:
  uint64_t state_;
};

// Mixes a few values into one seed (for per-window streams).
uint64_t mix_seed(uint64_t a, uint64_t b);

// One token drawn from softmax(log_probs * (1 / temperature)) over [vocab] (tokens whose
// probability underflows to 0 are never drawn). scratch is resized as needed.
int sample_token(const float* log_probs, int vocab, float temperature, SampleRng& rng, std::vector<float>& scratch);
// The same with the uniform number given (in [0, 1): where the draw falls in the mass).
int sample_token(const float* log_probs, int vocab, float temperature, double uniform, std::vector<float>& scratch);

// log_softmax of one row in float as CTranslate2 computes it (x - logsumexp(x)); disabled
// tokens (-inf after the rules) become float's lowest value first, CTranslate2's disable value.
void log_softmax_rule_row(float* logits, int vocab);

}  // namespace speechcore::runtime
