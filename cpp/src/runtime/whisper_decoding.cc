#include "runtime/whisper_decoding.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <unordered_map>

#include "core/status.h"
#include "engine/step_runner.h"
#include "io/audio.h"
#include "ops/ops.h"
#include "runtime/whisper_align.h"
#include "runtime/whisper_beam.h"
#include "runtime/whisper_greedy.h"

namespace speechcore::runtime {

namespace {
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

void disable_range(float* logits, int begin, int end) {  // [begin, end)
  for (int i = std::max(begin, 0); i < end; ++i) logits[i] = kNegInf;
}

}  // namespace

void apply_whisper_logits_rules(float* logits, int vocab, int step, const std::vector<int>& generated,
                                bool timestamps, const WhisperSpecialTokens& sp, const WindowOptions& o,
                                bool after_prefix) {
  for (int id : o.suppress_tokens)
    if (id >= 0 && id < vocab) logits[id] = kNegInf;
  if (step == 0)
    for (int id : o.suppress_tokens_begin)
      if (id >= 0 && id < vocab) logits[id] = kNegInf;
  if (!timestamps) return;

  const int tb = sp.timestamp_begin, te = sp.timestamp_end;
  logits[sp.no_timestamps] = kNegInf;
  bool check_timestamp_mass = false;
  if (step == 0 && after_prefix) {
    // CTranslate2 applies neither rule at the first step after a forced prefix.
  } else if (step == 0) {
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

PromptLayout prompt_layout(const std::vector<int>& prompt, const WhisperSpecialTokens& sp, const WindowOptions& o) {
  PromptLayout layout;
  const auto sot_it = std::find(prompt.begin(), prompt.end(), sp.sot);
  SC_CHECK(sot_it != prompt.end(), ErrorCode::kInvalidArgument, "the prompt has no start-of-transcript token");
  layout.sot_index = static_cast<int>(sot_it - prompt.begin());
  const int prompt_len = static_cast<int>(prompt.size());
  SC_CHECK(prompt_len < o.max_length, ErrorCode::kInvalidArgument, "the prompt (", prompt_len,
           " tokens) does not fit in the decoder's ", o.max_length, " positions");
  // The task part: <|startoftranscript|> and the special tokens up to <|notimestamps|> after it.
  int task_end = layout.sot_index;
  while (task_end < prompt_len && prompt[task_end] >= sp.sot && prompt[task_end] <= sp.no_timestamps) ++task_end;
  layout.forced = prompt_len - task_end;
  layout.timestamps = prompt[task_end - 1] != sp.no_timestamps;
  // CTranslate2 forwards the prompt up to the last task token, then decodes from it (forcing
  // the prefix); max_length counts the prefix.
  const int start_step = task_end - 1;
  layout.max_total = std::min(o.max_length / 2, o.max_length - start_step);
  layout.max_new = layout.max_total - layout.forced;
  return layout;
}

Tensor WindowRunner::log_mel(const std::vector<float>& samples) const {
  io::MelOptions mel_opt;
  mel_opt.n_mels = config().n_mels;
  return io::log_mel_spectrogram(samples.data(), samples.size(), mel_opt);
}

bool add_pick(WindowResult& r, int token, float logprob, int eot, int max_new) {
  r.sum_logprob = static_cast<float>(static_cast<float>(r.sum_logprob) + logprob);  // float, as CTranslate2
  if (token == eot) return true;
  r.tokens.push_back(token);
  return static_cast<int>(r.tokens.size()) >= max_new;
}

float normalized_score(float sum_logprob, size_t length, float length_penalty) {
  return sum_logprob / std::pow(static_cast<float>(length), length_penalty);
}

double average_logprob(float score, size_t length, float length_penalty) {
  const double n = static_cast<double>(length);
  return static_cast<double>(score) * std::pow(n, static_cast<double>(length_penalty)) / (n + 1.0);
}

void finish_window(WindowResult& r, float length_penalty) {
  const size_t n = r.tokens.size();
  r.avg_logprob = average_logprob(normalized_score(static_cast<float>(r.sum_logprob), n, length_penalty), n,
                                  length_penalty);
}

void check_decoding_support(const WindowOptions& o, const DecodingSupport& s, const std::string& device) {
  SC_CHECK(o.language_tokens.empty() || s.window_language, ErrorCode::kUnsupported,
           "multilingual=True (language detection in every window) is not supported on the ", device,
           " backend yet");
  if (o.temperature == 0.0f && o.beam_size > 1)
    SC_CHECK(s.beam_search, ErrorCode::kUnsupported, "beam_size=", o.beam_size,
             " (beam search) is not supported on the ", device, " backend yet; use beam_size=1");
  if (o.temperature > 0.0f)
    SC_CHECK(s.sampling, ErrorCode::kUnsupported, "temperature=", o.temperature,
             " (sampling) is not supported on the ", device, " backend yet; use temperature=0");
  if (!s.penalties) {
    SC_CHECK(o.repetition_penalty == 1.0f, ErrorCode::kUnsupported, "repetition_penalty=", o.repetition_penalty,
             " is not supported on the ", device, " backend yet; use 1");
    SC_CHECK(o.no_repeat_ngram_size == 0, ErrorCode::kUnsupported, "no_repeat_ngram_size=", o.no_repeat_ngram_size,
             " is not supported on the ", device, " backend yet; use 0");
    SC_CHECK(o.length_penalty == 1.0f, ErrorCode::kUnsupported, "length_penalty=", o.length_penalty,
             " is not supported on the ", device, " backend yet; use 1");
  }
}

void apply_penalties(float* logits, int vocab, const std::vector<int>& generated, const WindowOptions& o) {
  if (o.repetition_penalty != 1.0f && !generated.empty()) {
    // Every previous token's logit is penalized once, from its value before any penalty.
    std::vector<float> previous(generated.size());
    for (size_t j = 0; j < generated.size(); ++j) previous[j] = logits[generated[j]];
    for (size_t j = 0; j < generated.size(); ++j) {
      const float x = previous[j];
      logits[generated[j]] = x < 0.0f ? x * o.repetition_penalty : x / o.repetition_penalty;
    }
  }
  const size_t n = static_cast<size_t>(std::max(o.no_repeat_ngram_size, 0));
  if (n > 0 && generated.size() >= n) {
    // Ban the token that would complete an n-gram already seen: the last n-1 tokens matched
    // at every earlier position p (p + n <= length).
    const size_t len = generated.size();
    const int* tail = generated.data() + len - (n - 1);
    for (size_t p = 0; p + n <= len; ++p) {
      if (std::equal(tail, tail + (n - 1), generated.data() + p)) {
        const int id = generated[p + n - 1];
        if (id >= 0 && id < vocab) logits[id] = kNegInf;
      }
    }
  }
}

Alignment WindowRunner::align(const AlignRequest&, const WhisperSpecialTokens&) const {
  throw_error(ErrorCode::kUnsupported, "word_timestamps is not available on ", device(), " yet");
}

void apply_penalties(float* logits, int vocab, const std::vector<int>& forced, const std::vector<int>& generated,
                     const WindowOptions& o) {
  if (forced.empty()) return apply_penalties(logits, vocab, generated, o);
  if (o.repetition_penalty == 1.0f && o.no_repeat_ngram_size <= 0) return;
  std::vector<int> all = forced;
  all.insert(all.end(), generated.begin(), generated.end());
  apply_penalties(logits, vocab, all, o);
}

std::vector<int> forced_tokens(const std::vector<int>& prompt, const PromptLayout& layout) {
  return std::vector<int>(prompt.end() - layout.forced, prompt.end());
}

WindowResult prefix_only_result(const std::vector<int>& prompt, const PromptLayout& layout, float no_speech_prob,
                                float length_penalty) {
  WindowResult r;
  r.no_speech_prob = no_speech_prob;
  const int n = std::max(0, std::min(layout.forced, layout.max_total));
  r.tokens.assign(prompt.end() - layout.forced, prompt.end() - layout.forced + n);
  finish_window(r, length_penalty);
  return r;
}

std::unique_ptr<engine::StepRunner> WindowRunner::make_step_runner(const engine::StepRunnerConfig&) const {
  throw_error(ErrorCode::kUnsupported, "the engine (submit / transcribe_stream / atranscribe) is not available on ",
              device(), " yet; use transcribe or transcribe_batch");
}

namespace {

// TranscribeOptions::multilingual: the prompt with its language token (after
// <|startoftranscript|>) replaced by the window's most likely language, from the logits after
// <|startoftranscript|> alone on this encoder output (faster-whisper's detect_language on the
// segment's encoder output). Unchanged when the options ask for no detection.
std::vector<int> with_window_language(const models::whisper::WhisperModel& model, const models::whisper::CrossKV& cross,
                                      std::vector<int> prompt, const WhisperSpecialTokens& special,
                                      const WindowOptions& options, int* language_token) {
  *language_token = -1;
  if (options.language_tokens.empty()) return prompt;
  const size_t at = static_cast<size_t>(prompt_layout(prompt, special, options).sot_index) + 1;
  SC_CHECK(at < prompt.size(), ErrorCode::kInvalidArgument,
           "multilingual: the prompt has no language token after <|startoftranscript|>");
  const std::vector<float> logits = prompt_logits(model, cross, std::vector<int>{special.sot});
  int best = options.language_tokens.front();
  for (int id : options.language_tokens) {
    SC_CHECK(id >= 0 && static_cast<size_t>(id) < logits.size(), ErrorCode::kInvalidModel, "language token ", id,
             " is outside the vocabulary");
    if (logits[static_cast<size_t>(id)] > logits[static_cast<size_t>(best)]) best = id;
  }
  prompt[at] = best;
  *language_token = best;
  return prompt;
}

// The engine's runner on the CPU: one WindowDecoder (own KV caches, host logits rules; greedy,
// beam search or sampling) per window; a step advances each window in turn (CPU kernels are
// per window, so results equal the window decoded alone).
class CpuStepRunner final : public engine::StepRunner {
 public:
  CpuStepRunner(std::shared_ptr<const models::whisper::WhisperModel> model, const engine::StepRunnerConfig& c)
      : model_(std::move(model)),
        num_blocks_(c.num_blocks > 0 ? c.num_blocks
                                     : c.max_windows * ((model_->config().n_text_ctx + c.block_size - 1) / c.block_size)) {}
  int num_blocks() const override { return num_blocks_; }  // bookkeeping only: each window has its own cache
  void admit(const std::vector<engine::AdmitJob>& jobs, const WhisperSpecialTokens& special) override {
    for (const engine::AdmitJob& j : jobs) {
      SC_CHECK(windows_.count(j.id) == 0, ErrorCode::kInternal, "window ", j.id, " admitted twice");
      auto w = std::make_unique<Window>();
      if (j.encoder_output) w->cross = j.encoder_output;  // a fallback attempt: the window's encoder output again
      else w->cross = std::make_shared<models::whisper::CrossKV>(model_->encode(j.mel));
      w->keep_cross = j.options.keep_encoder_output;
      w->decoder = make_cpu_window_decoder(
          *model_, *w->cross, with_window_language(*model_, *w->cross, j.prompt, special, j.options, &w->language_token),
          special, j.options);
      w->decoder->step();
      windows_.emplace(j.id, std::move(w));
    }
  }
  void step(const std::vector<uint64_t>& ids) override {
    for (uint64_t id : ids) {
      WindowDecoder& d = *window(id).decoder;
      SC_CHECK(!d.done(), ErrorCode::kInternal, "window ", id, " stepped after it finished");
      d.step();
    }
  }
  bool done(uint64_t id) const override { return windows_.at(id)->decoder->done(); }
  WindowResult take(uint64_t id) override {
    Window& w = window(id);
    WindowResult r = w.decoder->take_result();
    if (w.keep_cross) r.encoder_output = w.cross;
    r.language_token = w.language_token;
    windows_.erase(id);
    return r;
  }
  void release(uint64_t id) override { windows_.erase(id); }
  size_t windows() const override { return windows_.size(); }
  DecodingSupport decoding_support() const override { return {true, true, true, true, true, true}; }

 private:
  struct Window {
    std::shared_ptr<const models::whisper::CrossKV> cross;
    bool keep_cross = false;                 // handed out with the result (WindowOptions::keep_encoder_output)
    int language_token = -1;                 // WindowResult::language_token
    std::unique_ptr<WindowDecoder> decoder;  // refers to *cross
  };
  Window& window(uint64_t id) {
    auto it = windows_.find(id);
    SC_CHECK(it != windows_.end(), ErrorCode::kInternal, "unknown window ", id);
    return *it->second;
  }
  std::shared_ptr<const models::whisper::WhisperModel> model_;
  int num_blocks_;
  std::unordered_map<uint64_t, std::unique_ptr<Window>> windows_;
};

class CpuWindowRunner final : public WindowRunner {
 public:
  explicit CpuWindowRunner(std::shared_ptr<const models::whisper::WhisperModel> model) : model_(std::move(model)) {}
  const models::whisper::WhisperConfig& config() const override { return model_->config(); }
  WindowResult run(const float* mel, const std::vector<int>& prompt, const WhisperSpecialTokens& special,
                   const WindowOptions& options) const override {
    return run_window(mel, nullptr, prompt, special, options);
  }
  std::vector<WindowResult> run_batch(const std::vector<WindowRequest>& requests,
                                      const WhisperSpecialTokens& special) const override {
    for (const WindowRequest& r : requests) prompt_layout(r.prompt, special, r.options);
    std::vector<WindowResult> out;
    out.reserve(requests.size());
    for (const WindowRequest& r : requests)
      out.push_back(run_window(r.mel, r.encoder_output, r.prompt, special, r.options));
    return out;
  }
  Alignment align(const AlignRequest& request, const WhisperSpecialTokens& special) const override {
    return align_window_cpu(*model_, request, special);
  }
  std::string device() const override { return "cpu"; }
  std::string compute_type() const override { return "float32"; }
  DecodingSupport decoding_support() const override { return {true, true, true, true, true, true}; }
  std::vector<float> prompt_logits(const float* mel, const std::vector<int>& prompt) const override {
    return runtime::prompt_logits(*model_, model_->encode(mel), prompt);
  }
  std::unique_ptr<engine::StepRunner> make_step_runner(const engine::StepRunnerConfig& c) const override {
    return std::make_unique<CpuStepRunner>(model_, c);
  }
  uint64_t encoder_passes() const override { return model_->encoder_passes(); }

 private:
  // One window, decoded against `encoder_output` (a fallback attempt's, kept from the first
  // attempt) or against mel's encoding.
  WindowResult run_window(const float* mel, std::shared_ptr<const models::whisper::CrossKV> encoder_output,
                          const std::vector<int>& prompt, const WhisperSpecialTokens& special,
                          const WindowOptions& options) const {
    prompt_layout(prompt, special, options);  // reject a bad prompt before the encoder runs
    std::shared_ptr<const models::whisper::CrossKV> cross = std::move(encoder_output);
    if (!cross) cross = std::make_shared<const models::whisper::CrossKV>(model_->encode(mel));
    int language_token = -1;
    WindowResult r = decode_window_cpu(
        *model_, *cross, with_window_language(*model_, *cross, prompt, special, options, &language_token), special,
        options);
    r.language_token = language_token;
    if (options.keep_encoder_output) r.encoder_output = std::move(cross);
    return r;
  }

  std::shared_ptr<const models::whisper::WhisperModel> model_;
};

}  // namespace

std::unique_ptr<WindowRunner> make_cpu_window_runner(std::shared_ptr<const models::whisper::WhisperModel> model) {
  return std::make_unique<CpuWindowRunner>(std::move(model));
}

}  // namespace speechcore::runtime
