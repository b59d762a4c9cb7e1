// Host-side greedy decoding of one window (temperature 0, beam_size 1) on the CPU backend.
#pragma once

#include <cmath>
#include <utility>
#include <vector>

#include "core/status.h"
#include "ops/ops.h"
#include "runtime/whisper_decoding.h"

namespace speechcore::runtime {

// The host-side greedy pick for one row of raw logits (modified in place) at the window's step
// `generated.size()`: penalties, the logits rules, then the first index among equal maxima; its
// log-prob (log-softmax of the ruled row) goes to *logprob. GreedyWindow and the search's greedy
// over rows (whisper_beam.cc, which has the penalties and the forced prefix) share it.
inline int greedy_pick(float* row, int vocab, const std::vector<int>& forced, const std::vector<int>& generated,
                       const PromptLayout& layout, const WhisperSpecialTokens& sp, const WindowOptions& o,
                       float* logprob) {
  apply_penalties(row, vocab, forced, generated, o);
  apply_whisper_logits_rules(row, vocab, static_cast<int>(generated.size()), generated, layout.timestamps, sp, o,
                             layout.forced > 0);
  const double lse = ops::logsumexp(row, vocab);
  int best = 0;
  for (int i = 1; i < vocab; ++i)
    if (row[i] > row[best]) best = i;
  *logprob = static_cast<float>(row[best] - lse);
  return best;
}

// Greedy decoding of one window with the logits rules on the host, one token per step():
// `Model` provides config(), new_state() and decode(state, cross, tokens, n, rows, logits)
// (CPU or CUDA). The first step() runs the prompt (and computes the no-speech probability),
// each later one feeds the previous pick; done() once end-of-text or the length limit is reached.
// Plain greedy windows only: needs_search() sends those with penalties, a length penalty or a
// forced prefix (and beams, sampling) to the search over rows (whisper_beam.h), and constructing
// one for such a window throws kInternal. Holds references to model and cross, which must
// outlive it.
template <typename Model, typename Cross>
class GreedyWindow {
 public:
  GreedyWindow(const Model& model, const Cross& cross, std::vector<int> prompt, const WhisperSpecialTokens& sp,
               WindowOptions o)
      : model_(model), cross_(cross), prompt_(std::move(prompt)), sp_(sp), o_(std::move(o)),
        layout_(prompt_layout(prompt_, sp_, o_)), vocab_(model.config().vocab_size), state_(model.new_state()),
        logits_(static_cast<size_t>(vocab_) * 2) {
    SC_CHECK(!needs_search(o_, layout_), ErrorCode::kInternal,
             "GreedyWindow decodes plain greedy windows only: this one's options or forced prefix need the search "
             "over rows (needs_search)");
  }

  bool done() const { return done_; }
  int generated() const { return static_cast<int>(result_.tokens.size()); }

  void step() {
    SC_ASSERT(!done_);
    float* step_logits = logits_.data();
    if (!started_) {
      started_ = true;
      const int prompt_len = static_cast<int>(prompt_.size());
      std::vector<int> rows = {prompt_len - 1};
      if (layout_.sot_index != prompt_len - 1) rows.insert(rows.begin(), layout_.sot_index);
      model_.decode(state_, cross_, prompt_.data(), prompt_len, rows, logits_.data());
      // no-speech probability: softmax of the raw logits at the start-of-transcript position
      const double lse = ops::logsumexp(logits_.data(), vocab_);
      result_.no_speech_prob =
          sp_.no_speech >= 0 ? static_cast<float>(std::exp(logits_[sp_.no_speech] - lse)) : 0.0f;
      step_logits = logits_.data() + (rows.size() - 1) * vocab_;
      if (layout_.max_new <= 0) return finish();
    } else {
      const int last = result_.tokens.back();
      model_.decode(state_, cross_, &last, 1, {0}, logits_.data());
    }
    float logprob = 0.0f;
    const int best = greedy_pick(step_logits, vocab_, {}, result_.tokens, layout_, sp_, o_, &logprob);
    if (add_pick(result_, best, logprob, sp_.eot, layout_.max_new)) finish();
  }

  WindowResult take_result() {
    SC_ASSERT(done_);
    return std::move(result_);
  }

 private:
  void finish() {
    done_ = true;
    finish_window(result_);  // length_penalty 1 (another one needs the search)
  }

  const Model& model_;
  const Cross& cross_;
  std::vector<int> prompt_;
  WhisperSpecialTokens sp_;
  WindowOptions o_;
  PromptLayout layout_;
  int vocab_;
  decltype(std::declval<const Model&>().new_state()) state_;
  std::vector<float> logits_;
  WindowResult result_;
  bool started_ = false;
  bool done_ = false;
};

// A whole window at once.
template <typename Model, typename Cross>
WindowResult decode_window_greedy(const Model& model, const Cross& cross, const std::vector<int>& prompt,
                                  const WhisperSpecialTokens& sp, const WindowOptions& o) {
  GreedyWindow<Model, Cross> w(model, cross, prompt, sp, o);
  while (!w.done()) w.step();
  return w.take_result();
}

template <typename Model, typename Cross>
std::vector<float> prompt_logits(const Model& model, const Cross& cross, const std::vector<int>& prompt) {
  SC_CHECK(!prompt.empty() && static_cast<int>(prompt.size()) <= model.config().n_text_ctx,
           ErrorCode::kInvalidArgument, "prompt_logits: the prompt needs 1 to ", model.config().n_text_ctx, " tokens");
  auto state = model.new_state();
  std::vector<float> logits(static_cast<size_t>(model.config().vocab_size));
  model.decode(state, cross, prompt.data(), static_cast<int>(prompt.size()), {static_cast<int>(prompt.size()) - 1},
               logits.data());
  return logits;
}

}  // namespace speechcore::runtime
