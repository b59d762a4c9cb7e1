// Host-side greedy decoding of one window, shared by the backends' WindowRunners.
#pragma once

#include <cmath>
#include <vector>

#include "core/status.h"
#include "ops/ops.h"
#include "runtime/whisper_decoding.h"

namespace speechcore::runtime {

// Greedy decoding of one window with the logits rules on the host; `Model` provides
// new_state() and decode(state, cross, tokens, n, rows, logits) (CPU or CUDA).
template <typename Model, typename Cross>
WindowResult decode_window_greedy(const Model& model, const Cross& cross, const std::vector<int>& prompt,
                                  const WhisperSpecialTokens& sp, const WindowOptions& o) {
  const int vocab = model.config().vocab_size;
  const PromptLayout layout = prompt_layout(prompt, sp, o);
  const int prompt_len = static_cast<int>(prompt.size());

  auto state = model.new_state();
  std::vector<float> logits(static_cast<size_t>(vocab) * 2);
  std::vector<int> rows = {prompt_len - 1};
  if (layout.sot_index != prompt_len - 1) rows.insert(rows.begin(), layout.sot_index);
  model.decode(state, cross, prompt.data(), prompt_len, rows, logits.data());

  WindowResult result;
  {  // no-speech probability: softmax of the raw logits at the start-of-transcript position
    const float* l = logits.data();
    const double lse = ops::logsumexp(l, vocab);
    result.no_speech_prob = sp.no_speech >= 0 ? static_cast<float>(std::exp(l[sp.no_speech] - lse)) : 0.0f;
  }
  float* step_logits = logits.data() + (rows.size() - 1) * vocab;

  std::vector<int>& out = result.tokens;
  for (int step = 0; step < layout.max_new; ++step) {
    apply_whisper_logits_rules(step_logits, vocab, step, out, layout.timestamps, sp, o);
    // log-softmax and greedy choice (first index among equal maxima)
    const double lse = ops::logsumexp(step_logits, vocab);
    int best = 0;
    for (int i = 1; i < vocab; ++i)
      if (step_logits[i] > step_logits[best]) best = i;
    result.sum_logprob += static_cast<double>(static_cast<float>(step_logits[best] - lse));
    if (best == sp.eot) break;
    out.push_back(best);
    if (step + 1 == layout.max_new) break;
    model.decode(state, cross, &best, 1, {0}, logits.data());
    step_logits = logits.data();
  }
  result.avg_logprob = static_cast<float>(result.sum_logprob / (static_cast<double>(out.size()) + 1.0));
  return result;
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
