#include "runtime/transcriber.h"

#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <set>

#include "core/status.h"
#include "io/audio.h"

namespace speechcore::runtime {

namespace {
constexpr double kTimePerFrame = 0.01;   // mel hop 160 / 16 kHz
constexpr double kTimePrecision = 0.02;  // one timestamp token
constexpr int kInputStride = 2;          // mel frames per encoder position

std::string strip(const std::string& s) {
  const char* ws = " \t\n\r\f\v";
  const size_t b = s.find_first_not_of(ws);
  if (b == std::string::npos) return "";
  const size_t e = s.find_last_not_of(ws);
  return s.substr(b, e - b + 1);
}

struct SplitSegment {
  double start, end;
  std::vector<int> tokens;
};
}  // namespace

float compression_ratio(const std::string& text) {
  if (text.empty()) return 0.0f;
  uLongf bound = compressBound(static_cast<uLong>(text.size()));
  std::vector<Bytef> buf(bound);
  const int rc = compress2(buf.data(), &bound, reinterpret_cast<const Bytef*>(text.data()),
                           static_cast<uLong>(text.size()), Z_DEFAULT_COMPRESSION);
  SC_CHECK(rc == Z_OK, ErrorCode::kInternal, "zlib compress failed (", rc, ")");
  return static_cast<float>(static_cast<double>(text.size()) / static_cast<double>(bound));
}

WhisperTranscriber::WhisperTranscriber(std::unique_ptr<WindowRunner> runner,
                                       std::shared_ptr<const io::Tokenizer> tokenizer)
    : runner_(std::move(runner)), tokenizer_(std::move(tokenizer)) {
  const io::Tokenizer& t = *tokenizer_;
  special_.eot = t.eot();
  special_.sot = t.sot();
  special_.no_timestamps = t.no_timestamps();
  special_.no_speech = t.no_speech();
  special_.timestamp_begin = t.timestamp_begin();
  special_.timestamp_end = runner_->config().vocab_size - 1;
  SC_CHECK(special_.eot >= 0 && special_.sot >= 0 && special_.no_timestamps >= 0 &&
               special_.timestamp_begin < runner_->config().vocab_size,
           ErrorCode::kInvalidModel, "the tokenizer lacks Whisper's special tokens");
}

Transcription WhisperTranscriber::transcribe(const std::vector<float>& samples,
                                             const TranscribeOptions& opt) const {
  const io::Tokenizer& tok = *tokenizer_;
  const WindowRunner& model = *runner_;
  const auto& cfg = model.config();

  // ---- options -------------------------------------------------------------------
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
  const std::vector<int> sot_sequence = tok.sot_sequence(language, opt.task);

  WindowOptions wopt;
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
  const int max_length = cfg.n_text_ctx;

  // ---- features ------------------------------------------------------------------
  Transcription result;
  result.language = language;
  result.duration = static_cast<double>(samples.size()) / 16000.0;
  io::MelOptions mel_opt;
  mel_opt.n_mels = cfg.n_mels;
  const Tensor features = io::log_mel_spectrogram(samples.data(), samples.size(), mel_opt);
  const int64_t total_frames = features.dim(1);
  const int64_t content_frames = total_frames - 1;
  const int window = model.n_frames();
  std::vector<float> mel(static_cast<size_t>(cfg.n_mels) * window);

  std::vector<int> all_tokens;
  if (!opt.initial_prompt.empty()) all_tokens = tok.encode(" " + strip(opt.initial_prompt));
  size_t prompt_reset_since = 0;
  int64_t seek = 0;
  int segment_id = 0;

  while (seek < content_frames) {
    const double time_offset = static_cast<double>(seek) * kTimePerFrame;
    const int64_t segment_size = std::min<int64_t>(window, content_frames - seek);
    const double segment_duration = static_cast<double>(segment_size) * kTimePerFrame;
    // the window's features, zero-padded to 30 s
    std::fill(mel.begin(), mel.end(), 0.0f);
    for (int m = 0; m < cfg.n_mels; ++m)
      std::memcpy(mel.data() + static_cast<size_t>(m) * window,
                  features.data<float>() + m * total_frames + seek, sizeof(float) * segment_size);


    std::vector<int> prompt;
    if (all_tokens.size() > prompt_reset_since) {
      prompt.push_back(tok.sot_prev());
      const size_t avail = all_tokens.size() - prompt_reset_since;
      const size_t keep = std::min<size_t>(avail, static_cast<size_t>(max_length / 2 - 1));
      prompt.insert(prompt.end(), all_tokens.end() - keep, all_tokens.end());
    }
    prompt.insert(prompt.end(), sot_sequence.begin(), sot_sequence.end());
    if (opt.without_timestamps) prompt.push_back(tok.no_timestamps());

    wopt.max_length = max_length;
    if (opt.max_new_tokens > 0) {
      wopt.max_length = static_cast<int>(prompt.size()) + opt.max_new_tokens;
      SC_CHECK(wopt.max_length <= max_length, ErrorCode::kInvalidArgument, "the prompt (", prompt.size(),
               " tokens) plus max_new_tokens (", opt.max_new_tokens, ") exceeds the model's ", max_length,
               " positions");
    }
    const WindowResult window_result = model.run(mel.data(), prompt, special_, wopt);
    const float temperature = 0.0f;
    const float cr = compression_ratio(strip(tok.decode(window_result.tokens)));

    if (window_result.no_speech_prob > opt.no_speech_threshold &&
        !(window_result.avg_logprob > opt.log_prob_threshold)) {
      seek += segment_size;  // silence: skip the window
      continue;
    }

    // ---- split into segments at timestamp pairs ------------------------------------
    const std::vector<int>& tokens = window_result.tokens;
    const int tb = special_.timestamp_begin;
    const int64_t previous_seek = seek;
    std::vector<SplitSegment> segments;
    const size_t n = tokens.size();
    const bool single_timestamp_ending = n >= 2 && tokens[n - 2] < tb && tokens[n - 1] >= tb;
    std::vector<size_t> slices;
    for (size_t i = 1; i < n; ++i)
      if (tokens[i] >= tb && tokens[i - 1] >= tb) slices.push_back(i);
    if (!slices.empty()) {
      if (single_timestamp_ending) slices.push_back(n);
      size_t last_slice = 0;
      for (size_t cur : slices) {
        SplitSegment s;
        s.tokens.assign(tokens.begin() + last_slice, tokens.begin() + cur);
        s.start = time_offset + (s.tokens.front() - tb) * kTimePrecision;
        s.end = time_offset + (s.tokens.back() - tb) * kTimePrecision;
        segments.push_back(std::move(s));
        last_slice = cur;
      }
      if (single_timestamp_ending) {
        seek += segment_size;
      } else {
        seek += static_cast<int64_t>(tokens[last_slice - 1] - tb) * kInputStride;
      }
    } else {
      double duration = segment_duration;
      int last_ts = -1;
      for (int t : tokens)
        if (t >= tb) last_ts = t;
      if (last_ts >= 0 && last_ts != tb) duration = (last_ts - tb) * kTimePrecision;
      segments.push_back(SplitSegment{time_offset, time_offset + duration, tokens});
      seek += segment_size;
    }

    for (SplitSegment& s : segments) {
      std::string text = tok.decode(s.tokens);
      if (s.start == s.end || strip(text).empty()) continue;
      all_tokens.insert(all_tokens.end(), s.tokens.begin(), s.tokens.end());
      Segment out;
      out.id = ++segment_id;
      out.seek = static_cast<int>(previous_seek);
      out.start = s.start;
      out.end = s.end;
      out.text = std::move(text);
      out.tokens = std::move(s.tokens);
      out.avg_logprob = window_result.avg_logprob;
      out.compression_ratio = cr;
      out.no_speech_prob = window_result.no_speech_prob;
      out.temperature = temperature;
      result.segments.push_back(std::move(out));
    }
    if (!opt.condition_on_previous_text || temperature > opt.prompt_reset_on_temperature)
      prompt_reset_since = all_tokens.size();
  }

  std::string text;
  for (const Segment& s : result.segments) text += s.text;
  result.text = strip(text);
  return result;
}

}  // namespace speechcore::runtime
