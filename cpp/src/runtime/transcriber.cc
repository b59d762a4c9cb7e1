#include "runtime/transcriber.h"

#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <set>
#include <string>

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

namespace {

// The options of one call, checked and resolved once for all of its recordings.
struct DecodePlan {
  const TranscribeOptions* opt = nullptr;
  std::string language;
  std::vector<int> sot_sequence;
  std::vector<int> initial_tokens;  // " " + initial_prompt, encoded
  WindowOptions window;             // max_length is set per window
  int max_length = 448;             // the decoder's positions
  int n_mels = 80;
  int window_frames = 3000;         // mel frames per 30 s window
};

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

// The long-form state of one recording: begin() computes its features, then next_request()
// and consume() alternate (one 30 s window each) until done().
class Recording {
 public:
  Recording(const DecodePlan& plan, const WindowRunner& runner, const io::Tokenizer& tok,
            const WhisperSpecialTokens& special, const std::vector<float>& samples)
      : plan_(plan), runner_(runner), tok_(tok), special_(special), samples_(samples) {}

  bool started() const { return started_; }
  bool done() const { return done_; }

  void begin() {
    SC_ASSERT(!started_);
    started_ = true;
    result_.language = plan_.language;
    result_.duration = static_cast<double>(samples_.size()) / 16000.0;
    features_ = runner_.log_mel(samples_);  // on the backend's device
    total_frames_ = features_.dim(1);
    content_frames_ = total_frames_ - 1;
    all_tokens_ = plan_.initial_tokens;
    mel_.assign(static_cast<size_t>(plan_.n_mels) * plan_.window_frames, 0.0f);
    update_done();
  }

  // The next window: its features (zero-padded to 30 s, in a buffer of this recording that
  // stays valid until consume()), the prompt and the decoding options.
  WindowRequest next_request() {
    SC_ASSERT(started_ && !done_);
    const int window = plan_.window_frames;
    window_size_ = std::min<int64_t>(window, content_frames_ - seek_);
    std::fill(mel_.begin(), mel_.end(), 0.0f);
    for (int m = 0; m < plan_.n_mels; ++m)
      std::memcpy(mel_.data() + static_cast<size_t>(m) * window,
                  features_.data<float>() + m * total_frames_ + seek_, sizeof(float) * window_size_);

    WindowRequest req;
    req.mel = mel_.data();
    std::vector<int>& prompt = req.prompt;
    if (all_tokens_.size() > prompt_reset_since_) {
      prompt.push_back(tok_.sot_prev());
      const size_t avail = all_tokens_.size() - prompt_reset_since_;
      const size_t keep = std::min<size_t>(avail, static_cast<size_t>(plan_.max_length / 2 - 1));
      prompt.insert(prompt.end(), all_tokens_.end() - keep, all_tokens_.end());
    }
    prompt.insert(prompt.end(), plan_.sot_sequence.begin(), plan_.sot_sequence.end());
    if (plan_.opt->without_timestamps) prompt.push_back(tok_.no_timestamps());

    req.options = plan_.window;
    const int max_new_tokens = plan_.opt->max_new_tokens;
    if (max_new_tokens > 0) {
      req.options.max_length = static_cast<int>(prompt.size()) + max_new_tokens;
      SC_CHECK(req.options.max_length <= plan_.max_length, ErrorCode::kInvalidArgument, "the prompt (",
               prompt.size(), " tokens) plus max_new_tokens (", max_new_tokens, ") exceeds the model's ",
               plan_.max_length, " positions");
    }
    return req;
  }

  // Takes the decoded window: skips it as silence or splits it into segments, then seeks.
  void consume(const WindowResult& window_result) {
    SC_ASSERT(started_ && !done_ && window_size_ > 0);
    const TranscribeOptions& opt = *plan_.opt;
    const double time_offset = static_cast<double>(seek_) * kTimePerFrame;
    const int64_t segment_size = window_size_;
    const double segment_duration = static_cast<double>(segment_size) * kTimePerFrame;
    window_size_ = 0;
    const float temperature = 0.0f;

    if (window_result.no_speech_prob > opt.no_speech_threshold &&
        !(window_result.avg_logprob > opt.log_prob_threshold)) {
      seek_ += segment_size;  // silence: skip the window
      update_done();
      return;
    }
    const float cr = compression_ratio(strip(tok_.decode(window_result.tokens)));

    // ---- split into segments at timestamp pairs ------------------------------------
    const std::vector<int>& tokens = window_result.tokens;
    const int tb = special_.timestamp_begin;
    const int64_t previous_seek = seek_;
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
        seek_ += segment_size;
      } else {
        seek_ += static_cast<int64_t>(tokens[last_slice - 1] - tb) * kInputStride;
      }
    } else {
      double duration = segment_duration;
      int last_ts = -1;
      for (int t : tokens)
        if (t >= tb) last_ts = t;
      if (last_ts >= 0 && last_ts != tb) duration = (last_ts - tb) * kTimePrecision;
      segments.push_back(SplitSegment{time_offset, time_offset + duration, tokens});
      seek_ += segment_size;
    }

    for (SplitSegment& s : segments) {
      std::string text = tok_.decode(s.tokens);
      if (s.start == s.end || strip(text).empty()) continue;
      all_tokens_.insert(all_tokens_.end(), s.tokens.begin(), s.tokens.end());
      Segment out;
      out.id = ++segment_id_;
      out.seek = static_cast<int>(previous_seek);
      out.start = s.start;
      out.end = s.end;
      out.text = std::move(text);
      out.tokens = std::move(s.tokens);
      out.avg_logprob = window_result.avg_logprob;
      out.compression_ratio = cr;
      out.no_speech_prob = window_result.no_speech_prob;
      out.temperature = temperature;
      result_.segments.push_back(std::move(out));
    }
    if (!opt.condition_on_previous_text || temperature > opt.prompt_reset_on_temperature)
      prompt_reset_since_ = all_tokens_.size();
    update_done();
  }

  // The finished transcription (once done()).
  Transcription take_result() {
    SC_ASSERT(done_);
    return std::move(result_);
  }

 private:
  void update_done() {
    done_ = seek_ >= content_frames_;
    if (!done_) return;
    std::string text;
    for (const Segment& s : result_.segments) text += s.text;
    result_.text = strip(text);
    features_ = Tensor();  // what a finished recording no longer needs
    std::vector<float>().swap(mel_);
    std::vector<int>().swap(all_tokens_);
  }

  const DecodePlan& plan_;
  const WindowRunner& runner_;
  const io::Tokenizer& tok_;
  const WhisperSpecialTokens& special_;
  const std::vector<float>& samples_;

  bool started_ = false;
  bool done_ = false;
  Tensor features_;              // [n_mels, total_frames] log-mel of the whole recording
  int64_t total_frames_ = 0;
  int64_t content_frames_ = 0;   // total_frames - 1 (the padding frame)
  std::vector<float> mel_;       // the current window's features [n_mels, window_frames]
  int64_t window_size_ = 0;      // frames of content in the current window (0: none pending)
  std::vector<int> all_tokens_;  // the initial prompt, then every kept segment's tokens
  size_t prompt_reset_since_ = 0;
  int64_t seek_ = 0;             // mel frame where the next window starts
  int segment_id_ = 0;
  Transcription result_;
};

}  // namespace

std::vector<Transcription> WhisperTranscriber::run(const std::vector<const std::vector<float>*>& samples,
                                                   const TranscribeOptions& options, size_t max_batch) const {
  const DecodePlan plan = make_plan(*tokenizer_, *runner_, options);  // checks every option first
  std::vector<Recording> recordings;
  recordings.reserve(samples.size());
  for (const std::vector<float>* s : samples) recordings.emplace_back(plan, *runner_, *tokenizer_, special_, *s);
  std::vector<Transcription> out(samples.size());

  // Each round: the first max_batch unfinished recordings (input order; a recording's
  // features are computed when it first joins a round), one window each, one run_batch call.
  // An error of one recording names it when there are several.
  const auto named = [&](size_t i, auto&& step) {
    try {
      step();
    } catch (const Error& e) {
      if (recordings.size() == 1) throw;
      throw Error(e.code(), "audio item " + std::to_string(i) + ": " + e.what());
    }
  };
  size_t next_new = 0;
  std::vector<size_t> active;
  std::vector<WindowRequest> requests;
  for (;;) {
    active.erase(std::remove_if(active.begin(), active.end(), [&](size_t i) { return recordings[i].done(); }),
                 active.end());
    while (active.size() < max_batch && next_new < recordings.size()) {
      Recording& r = recordings[next_new];
      named(next_new, [&] { r.begin(); });
      if (r.done()) {
        out[next_new] = r.take_result();  // no content frames: nothing to decode
      } else {
        active.push_back(next_new);
      }
      ++next_new;
    }
    if (active.empty()) break;
    requests.clear();
    for (size_t i : active) named(i, [&] { requests.push_back(recordings[i].next_request()); });
    const std::vector<WindowResult> results = runner_->run_batch(requests, special_);
    SC_CHECK(results.size() == requests.size(), ErrorCode::kInternal, "run_batch returned ", results.size(),
             " results for ", requests.size(), " windows");
    for (size_t k = 0; k < active.size(); ++k) {
      Recording& r = recordings[active[k]];
      r.consume(results[k]);
      if (r.done()) out[active[k]] = r.take_result();
    }
  }
  return out;
}

Transcription WhisperTranscriber::transcribe(const std::vector<float>& samples,
                                             const TranscribeOptions& options) const {
  return std::move(run({&samples}, options, 1).front());
}

std::vector<Transcription> WhisperTranscriber::transcribe_batch(const std::vector<std::vector<float>>& samples,
                                                                const TranscribeOptions& options,
                                                                int max_batch) const {
  SC_CHECK(max_batch >= 1, ErrorCode::kInvalidArgument, "max_batch must be >= 1, got ", max_batch);
  std::vector<const std::vector<float>*> refs;
  refs.reserve(samples.size());
  for (const std::vector<float>& s : samples) refs.push_back(&s);
  return run(refs, options, static_cast<size_t>(max_batch));
}

}  // namespace speechcore::runtime
