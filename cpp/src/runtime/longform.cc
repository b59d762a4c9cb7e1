#include "runtime/longform.h"

#include <cmath>
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
  SC_CHECK(opt.beam_size == 1, ErrorCode::kUnsupported, "beam search (beam_size=", opt.beam_size,
           ") is not implemented yet; use beam_size=1");
  SC_CHECK(std::isfinite(opt.temperature) && opt.temperature >= 0.0f, ErrorCode::kInvalidArgument,
           "temperature must be a finite number >= 0, got ", opt.temperature);
  SC_CHECK(opt.temperature == 0.0f, ErrorCode::kUnsupported, "sampling (temperature=", opt.temperature,
           ") is not implemented yet; use temperature=0");
  SC_CHECK(opt.max_new_tokens >= 0, ErrorCode::kInvalidArgument, "max_new_tokens must be >= 0");
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
  SC_CHECK(!language.empty(), ErrorCode::kInvalidArgument,
           "this multilingual model needs language=... (automatic language detection is not available yet)");
  plan.language = language;
  plan.sot_sequence = tok.sot_sequence(language, opt.task);

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
  plan.n_mels = cfg.n_mels;
  plan.window_frames = model.n_frames();
  return plan;
}

}  // namespace speechcore::runtime
