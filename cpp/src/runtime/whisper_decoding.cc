#include "runtime/whisper_decoding.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/status.h"
#include "ops/ops.h"

namespace speechcore::runtime {

namespace {
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

void disable_range(float* logits, int begin, int end) {  // [begin, end)
  for (int i = std::max(begin, 0); i < end; ++i) logits[i] = kNegInf;
}

}  // namespace

void apply_whisper_logits_rules(float* logits, int vocab, int step, const std::vector<int>& generated,
                                bool timestamps, const WhisperSpecialTokens& sp, const WindowOptions& o) {
  for (int id : o.suppress_tokens)
    if (id >= 0 && id < vocab) logits[id] = kNegInf;
  if (step == 0)
    for (int id : o.suppress_tokens_begin)
      if (id >= 0 && id < vocab) logits[id] = kNegInf;
  if (!timestamps) return;

  const int tb = sp.timestamp_begin, te = sp.timestamp_end;
  logits[sp.no_timestamps] = kNegInf;
  bool check_timestamp_mass = false;
  if (step == 0) {
    disable_range(logits, 0, tb);  // the first token is a timestamp
    if (o.max_initial_timestamp_index >= 0) disable_range(logits, tb + o.max_initial_timestamp_index + 1, te + 1);
  } else {
    const int last = generated[step - 1];
    if (last >= tb) {
      const int penultimate = step >= 2 ? generated[step - 2] : last;
      if (penultimate >= tb) {
        disable_range(logits, tb, te + 1);  // after a pair, text must follow
      } else {
        disable_range(logits, 0, sp.eot);   // a closing timestamp or end-of-text
        disable_range(logits, tb, last);
        check_timestamp_mass = true;
      }
    } else {
      check_timestamp_mass = true;
      for (int t = step - 1; t >= 0; --t) {  // timestamps never decrease
        if (generated[t] >= tb) {
          disable_range(logits, tb, generated[t] + 1);
          break;
        }
      }
    }
  }
  if (check_timestamp_mass) {
    // When the total probability of timestamps beats every single text token, sample a timestamp.
    const double lse_all = ops::logsumexp(logits, vocab);
    float max_text = kNegInf;
    for (int i = 0; i < tb; ++i) max_text = std::max(max_text, logits[i]);
    const double ts_logprob = ops::logsumexp(logits + tb, te - tb + 1) - lse_all;
    const double text_logprob = static_cast<double>(max_text) - lse_all;
    if (ts_logprob > text_logprob) disable_range(logits, 0, tb);
  }
}

WindowResult decode_window_greedy(const models::whisper::WhisperModel& model,
                                  const models::whisper::CrossKV& cross, const std::vector<int>& prompt,
                                  const WhisperSpecialTokens& sp, const WindowOptions& o) {
  const int vocab = model.config().vocab_size;
  const auto sot_it = std::find(prompt.begin(), prompt.end(), sp.sot);
  SC_CHECK(sot_it != prompt.end(), ErrorCode::kInvalidArgument, "the prompt has no start-of-transcript token");
  const int sot_index = static_cast<int>(sot_it - prompt.begin());
  const int prompt_len = static_cast<int>(prompt.size());
  SC_CHECK(prompt_len < o.max_length, ErrorCode::kInvalidArgument, "the prompt (", prompt_len,
           " tokens) does not fit in the decoder's ", o.max_length, " positions");
  const bool timestamps = prompt.back() != sp.no_timestamps;
  // CTranslate2 forwards all but the last prompt token, then decodes from the last one.
  const int start_step = prompt_len - 1;
  const int max_new = std::min(o.max_length / 2, o.max_length - start_step);

  models::whisper::DecoderState state = model.new_state();
  std::vector<float> logits(static_cast<size_t>(vocab) * 2);
  std::vector<int> rows = {prompt_len - 1};
  if (sot_index != prompt_len - 1) rows.insert(rows.begin(), sot_index);
  model.decode(state, cross, prompt.data(), prompt_len, rows, logits.data());

  WindowResult result;
  {  // no-speech probability: softmax of the raw logits at the start-of-transcript position
    const float* l = logits.data();
    const double lse = ops::logsumexp(l, vocab);
    result.no_speech_prob = sp.no_speech >= 0 ? static_cast<float>(std::exp(l[sp.no_speech] - lse)) : 0.0f;
  }
  float* step_logits = logits.data() + (rows.size() - 1) * vocab;

  std::vector<int>& out = result.tokens;
  for (int step = 0; step < max_new; ++step) {
    apply_whisper_logits_rules(step_logits, vocab, step, out, timestamps, sp, o);
    // log-softmax and greedy choice (first index among equal maxima)
    const double lse = ops::logsumexp(step_logits, vocab);
    int best = 0;
    for (int i = 1; i < vocab; ++i)
      if (step_logits[i] > step_logits[best]) best = i;
    result.sum_logprob += static_cast<double>(static_cast<float>(step_logits[best] - lse));
    if (best == sp.eot) break;
    out.push_back(best);
    if (step + 1 == max_new) break;
    model.decode(state, cross, &best, 1, {0}, logits.data());
    step_logits = logits.data();
  }
  result.avg_logprob = static_cast<float>(result.sum_logprob / (static_cast<double>(out.size()) + 1.0));
  return result;
}

}  // namespace speechcore::runtime
