#include "runtime/longform.h"

#include "runtime/whisper_beam.h"

#include <cmath>
#include <limits>
#include <set>

namespace speechcore::runtime {

std::string strip(const std::string& s) {
  const char* ws = " \t\n\r\f\v";
  const size_t b = s.find_first_not_of(ws);
  if (b == std::string::npos) return "";
  const size_t e = s.find_last_not_of(ws);
  return s.substr(b, e - b + 1);
}

DecodePlan make_plan(const io::Tokenizer& tok, const WindowRunner& model, const TranscribeOptions& opt) {
  const auto& cfg = model.config();
  SC_CHECK(opt.task == "transcribe" || opt.task == "translate", ErrorCode::kInvalidArgument,
           "task must be 'transcribe' or 'translate', got '", opt.task, "'");
  SC_CHECK(opt.beam_size >= 1, ErrorCode::kInvalidArgument, "beam_size must be >= 1, got ", opt.beam_size);
  SC_CHECK(opt.best_of >= 1, ErrorCode::kInvalidArgument, "best_of must be >= 1, got ", opt.best_of);
  SC_CHECK(std::isfinite(opt.patience) && opt.patience > 0.0f, ErrorCode::kInvalidArgument,
           "patience must be a finite number > 0, got ", opt.patience);
  SC_CHECK(std::isfinite(opt.length_penalty), ErrorCode::kInvalidArgument, "length_penalty must be finite, got ",
           opt.length_penalty);
  SC_CHECK(std::isfinite(opt.repetition_penalty) && opt.repetition_penalty > 0.0f, ErrorCode::kInvalidArgument,
           "repetition_penalty must be a finite number > 0, got ", opt.repetition_penalty);
  SC_CHECK(opt.no_repeat_ngram_size >= 0, ErrorCode::kInvalidArgument, "no_repeat_ngram_size must be >= 0, got ",
           opt.no_repeat_ngram_size);
  SC_CHECK(!opt.temperature.empty(), ErrorCode::kInvalidArgument,
           "temperature must be a number or a non-empty list of numbers");
  bool deterministic = false;
  for (float t : opt.temperature) {
    SC_CHECK(std::isfinite(t) && t >= 0.0f, ErrorCode::kInvalidArgument,
             "temperature must be finite numbers >= 0, got ", t);
    deterministic = deterministic || t == 0.0f;
  }
  // CTranslate2 refuses a search that cannot keep one hypothesis (beam_size * patience < 0.5).
  SC_CHECK(!deterministic || std::round(static_cast<float>(opt.beam_size) * opt.patience) >= 1.0f,
           ErrorCode::kInvalidArgument, "beam_size * patience must be at least 0.5 (got beam_size=", opt.beam_size,
           ", patience=", opt.patience, ")");
  for (const char* name : {"compression_ratio_threshold", "log_prob_threshold", "no_speech_threshold",
                           "prompt_reset_on_temperature"}) {
    const std::string n = name;
    const float v = n == "compression_ratio_threshold" ? opt.compression_ratio_threshold
                    : n == "log_prob_threshold"        ? opt.log_prob_threshold
                    : n == "no_speech_threshold"       ? opt.no_speech_threshold
                                                       : opt.prompt_reset_on_temperature;
    SC_CHECK(!std::isnan(v), ErrorCode::kInvalidArgument, name, " must be a number, got NaN");
  }
  SC_CHECK(opt.max_new_tokens >= 0, ErrorCode::kInvalidArgument, "max_new_tokens must be >= 0");
  SC_CHECK(!opt.hallucination_silence_threshold || !std::isnan(*opt.hallucination_silence_threshold),
           ErrorCode::kInvalidArgument, "hallucination_silence_threshold must be a number, got NaN");
  SC_CHECK(!(opt.word_timestamps && opt.chunked), ErrorCode::kUnsupported,
           "word_timestamps is not available in the chunked (batched VAD) mode yet");
  DecodePlan plan;
  plan.opt = &opt;
  const bool multilingual = tok.multilingual();
  std::string language = opt.language.empty() ? (multilingual ? "" : "en") : opt.language;
  if (!language.empty())
    SC_CHECK(tok.language_token(language) >= 0, ErrorCode::kInvalidArgument, "unknown language code '",
             language, "'");
  if (!multilingual) {
    SC_CHECK(opt.task == "transcribe", ErrorCode::kInvalidArgument,
             "task='translate' needs a multilingual model; this one is English-only");
    language = "en";  // as faster-whisper: English-only models always transcribe English
  }
  SC_CHECK(opt.language_detection_segments >= 1, ErrorCode::kInvalidArgument,
           "language_detection_segments must be >= 1, got ", opt.language_detection_segments);
  SC_CHECK(!std::isnan(opt.language_detection_threshold), ErrorCode::kInvalidArgument,
           "language_detection_threshold must be a number, got NaN");
  if (language.empty()) {
    plan.detect = true;  // multilingual, no language given: FilteredRecording detects it
  } else {
    set_language(plan, tok, language);
  }

  WindowOptions& wopt = plan.window;
  wopt.max_initial_timestamp_index =
      opt.max_initial_timestamp < 0 ? -1 : static_cast<int>(std::lround(opt.max_initial_timestamp / kTimePrecision));
  if (!opt.suppress_tokens.empty()) {
    std::set<int> ids;
    for (int id : opt.suppress_tokens) {
      if (id == -1) {
        for (int x : tok.non_speech_tokens()) ids.insert(x);
      } else {
        SC_CHECK(id >= 0 && id < cfg.vocab_size, ErrorCode::kInvalidArgument, "suppress_tokens: token id ", id,
                 " is outside the vocabulary");
        ids.insert(id);
      }
    }
    for (int id : {tok.transcribe(), tok.translate(), tok.sot(), tok.sot_prev(), tok.sot_lm(), tok.no_speech()})
      if (id >= 0) ids.insert(id);
    wopt.suppress_tokens.assign(ids.begin(), ids.end());
  }
  if (opt.suppress_blank) {
    wopt.suppress_tokens_begin = cfg.suppress_ids_begin;
    if (wopt.suppress_tokens_begin.empty()) {
      const std::vector<int> space = tok.encode(" ");
      if (!space.empty()) wopt.suppress_tokens_begin.push_back(space[0]);
      wopt.suppress_tokens_begin.push_back(tok.eot());
    }
  }
  plan.max_length = cfg.n_text_ctx;
  wopt.max_length = plan.max_length;
  if (!opt.initial_prompt.empty()) plan.initial_tokens = tok.encode(" " + strip(opt.initial_prompt));
  // faster-whisper's get_prompt: prefix and hotwords cut to max_length / 2 - 1 tokens.
  const auto capped = [&](const std::string& text) {
    std::vector<int> ids = tok.encode(" " + strip(text));
    if (static_cast<int>(ids.size()) >= plan.max_length / 2) ids.resize(static_cast<size_t>(plan.max_length / 2 - 1));
    return ids;
  };
  if (!opt.prefix.empty()) plan.prefix_tokens = capped(opt.prefix);
  if (!opt.hotwords.empty()) plan.hotword_tokens = capped(opt.hotwords);
  SC_CHECK(plan.prefix_tokens.empty() || model.decoding_support().prefix, ErrorCode::kUnsupported,
           "prefix is not supported on the ", model.device(), " backend yet");
  for (size_t i = 0; i < opt.clip_timestamps.size(); ++i) {
    const double t = opt.clip_timestamps[i];
    SC_CHECK(std::isfinite(t) && t >= 0.0, ErrorCode::kInvalidArgument,
             "clip_timestamps must be finite numbers of seconds >= 0, got ", t);
    SC_CHECK(i % 2 == 0 || t > opt.clip_timestamps[i - 1], ErrorCode::kInvalidArgument,
             "clip_timestamps: clip ", i / 2, " ends (", t, " s) before it starts (", opt.clip_timestamps[i - 1], " s)");
  }
  plan.n_mels = cfg.n_mels;
  plan.window_frames = model.n_frames();
  const int max_chunk = model.n_frames() / 100;  // seconds of the encoder's input
  SC_CHECK(opt.chunk_length >= 0 && opt.chunk_length <= max_chunk, ErrorCode::kInvalidArgument,
           "chunk_length must be 1..", max_chunk, " seconds (the model's window), or 0 for the whole window; got ",
           opt.chunk_length);
  plan.chunk_frames = opt.chunk_length > 0 ? opt.chunk_length * 100 : plan.window_frames;
  wopt.patience = opt.patience;
  wopt.length_penalty = opt.length_penalty;
  wopt.repetition_penalty = opt.repetition_penalty;
  wopt.no_repeat_ngram_size = opt.no_repeat_ngram_size;
  plan.temperatures = opt.temperature;
  // Every attempt's search must be one this backend runs (never decoded greedily instead).
  const DecodingSupport support = model.decoding_support();
  SC_CHECK(!opt.word_timestamps || support.word_timestamps, ErrorCode::kUnsupported,
           "word_timestamps is not available on ", model.device(), " yet");
  // Kept for word timestamps, and wherever a fallback may decode the window again (the next
  // attempt reuses it: WindowRequest::encoder_output); chunked mode tries one temperature only.
  wopt.keep_encoder_output = opt.word_timestamps || (plan.temperatures.size() > 1 && !opt.chunked);
  // multilingual: each window detects its own language (English-only checkpoints ignore the
  // option, as faster-whisper does after a warning).
  if (opt.multilingual && multilingual) wopt.language_tokens = tok.language_tokens();
  for (size_t a = 0; a < plan.temperatures.size(); ++a)
    check_decoding_support(window_for(plan, a, 0), support, model.device());
  return plan;
}

void set_language(DecodePlan& plan, const io::Tokenizer& tok, const std::string& language) {
  plan.language = language;
  plan.sot_sequence = tok.sot_sequence(language, plan.opt->task);
  plan.detect = false;
}

std::vector<std::pair<int64_t, int64_t>> seek_clips(const TranscribeOptions& opt, int64_t content_frames) {
  std::vector<int64_t> points;
  // Python's round(ts * frames_per_second): to nearest, ties to even.
  for (double t : opt.clip_timestamps) points.push_back(static_cast<int64_t>(std::nearbyint(t * 100.0)));
  if (points.empty()) points.push_back(0);
  if (points.size() % 2 == 1) points.push_back(content_frames);
  std::vector<std::pair<int64_t, int64_t>> clips;
  for (size_t i = 0; i + 1 < points.size(); i += 2) clips.emplace_back(points[i], points[i + 1]);
  return clips;
}

WindowOptions window_for(const DecodePlan& plan, size_t attempt, int64_t seek) {
  SC_ASSERT(attempt < plan.temperatures.size());
  WindowOptions o = plan.window;
  const float t = plan.temperatures[attempt];
  o.temperature = t;
  if (t > 0.0f) {
    o.beam_size = 1;
    o.num_hypotheses = plan.opt->best_of;
  } else {
    o.beam_size = plan.opt->beam_size;
    o.num_hypotheses = 1;
  }
  o.seed = mix_seed(mix_seed(plan.opt->seed, static_cast<uint64_t>(seek)), static_cast<uint64_t>(attempt));
  return o;
}

bool needs_fallback(const TranscribeOptions& opt, float cr, double avg, float no_speech_prob) {
  bool fallback = false;
  if (cr > opt.compression_ratio_threshold) fallback = true;  // too repetitive
  if (avg < opt.log_prob_threshold) fallback = true;          // average log-prob too low
  if (no_speech_prob > opt.no_speech_threshold && avg < opt.log_prob_threshold) fallback = false;  // silence
  return fallback;
}

bool is_silence(const TranscribeOptions& opt, double avg, float no_speech_prob) {
  bool skip = no_speech_prob > opt.no_speech_threshold;
  // -inf stands for faster-whisper's None: the log-prob then never overrides.
  const bool log_prob_check = opt.log_prob_threshold != -std::numeric_limits<float>::infinity();
  if (log_prob_check && avg > opt.log_prob_threshold) skip = false;
  return skip;
}

}  // namespace speechcore::runtime
