// The long-form algorithm of faster-whisper 1.2.1 (30 s windows, seek by the last timestamp,
// condition on the previous text, temperature fallback) as a per-recording state machine: a
// Recording produces its next window request and consumes the window's result, so the windows
// of many recordings can be decoded together (WhisperTranscriber::transcribe_batch rounds, the
// Engine's scheduler).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <cmath>
#include <deque>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/status.h"
#include "io/tokenizer.h"
#include "runtime/whisper_decoding.h"
#include "runtime/word_timestamps.h"
#include "speechcore/options.h"
#include "speechcore/results.h"

namespace speechcore::runtime {

constexpr double kTimePerFrame = 0.01;   // mel hop 160 / 16 kHz
constexpr double kTimePrecision = 0.02;  // one timestamp token
constexpr int kInputStride = 2;          // mel frames per encoder position

// s without leading/trailing whitespace (Python's str.strip()).
std::string strip(const std::string& s);

// The options of one call, checked and resolved once for all of its recordings.
struct DecodePlan {
  const TranscribeOptions* opt = nullptr;
  std::string language;             // empty until detected when `detect`
  bool detect = false;              // multilingual model, no language given: detect it (set_language)
  std::vector<int> sot_sequence;
  std::vector<int> initial_tokens;  // " " + initial_prompt, encoded
  std::vector<int> prefix_tokens;   // " " + prefix, encoded (at most max_length / 2 - 1)
  std::vector<int> hotword_tokens;  // " " + hotwords, encoded (at most max_length / 2 - 1; not in the prefix's window)
  WindowOptions window;             // max_length is set per window; search fields per attempt (window_for)
  std::vector<float> temperatures;  // tried in turn for each window
  int max_length = 448;             // the decoder's positions
  int n_mels = 80;
  int window_frames = 3000;         // mel frames per 30 s window (the encoder's input)
  int chunk_frames = 3000;          // mel frames of audio a window takes (chunk_length), <= window_frames
};

// Checks and resolves the options of one call (throws kInvalidArgument, or kUnsupported for
// search features the runner's backend lacks: see WindowRunner::decoding_support).
DecodePlan make_plan(const io::Tokenizer& tok, const WindowRunner& model, const TranscribeOptions& opt);

// Sets the plan's language and start-of-transcript sequence (after detection).
void set_language(DecodePlan& plan, const io::Tokenizer& tok, const std::string& language);

// faster-whisper's seek clips: [start, end) mel frames of each clip of opt.clip_timestamps
// (rounded to frames; an odd count ends at content_frames; none = the whole recording).
std::vector<std::pair<int64_t, int64_t>> seek_clips(const TranscribeOptions& opt, int64_t content_frames);

// The window options of attempt `attempt` (index into plan.temperatures) of the window starting
// at mel frame `seek`: at temperature 0 greedy / beam search (beam_size), above it best_of
// samples, with a random stream of its own (faster-whisper's generate_with_fallback).
WindowOptions window_for(const DecodePlan& plan, size_t attempt, int64_t seek);

// faster-whisper's rule: a window decoded at some temperature needs the next one when its text
// is too repetitive or its average log-prob too low, unless it is silence.
bool needs_fallback(const TranscribeOptions& opt, float compression_ratio, double avg_logprob, float no_speech_prob);
// faster-whisper's skip rule: the window is silence.
bool is_silence(const TranscribeOptions& opt, double avg_logprob, float no_speech_prob);

// float compression_ratio(...) is declared in runtime/transcriber.h.
float compression_ratio(const std::string& text);

// The long-form state of one recording: begin() computes its features, then next_request()
// and consume() alternate (one 30 s window each) until done().
//
// Temperature fallback: when a window fails faster-whisper's checks (needs_fallback) and a
// temperature is left, consume() keeps the seek and the next next_request() re-issues the same
// window (same features and prompt) at the next temperature; when every temperature failed,
// the attempt with the best average log-prob (among those passing the compression check, if
// any) is used, reported with the last temperature. Nothing after a window is consumed before
// the window's final attempt.
//
// Look-ahead: a window's prompt and start normally depend on the previous window's result, so
// one window is in flight at a time. When they cannot (without_timestamps and no conditioning on
// previous text: every window starts where the previous one ends and is prompted with the
// start-of-transcript sequence alone), next_request() may issue up to kMaxLookahead windows
// ahead, guessing that start and prompt. consume() takes the oldest issued window and checks the
// guess for the next one against what the sequential algorithm would now issue (a silent window
// keeps the initial prompt; a stray timestamp pair seeks elsewhere; a window that falls back is
// re-issued first); on a mismatch every window still issued is dropped (discarded() says how many, newest last) and issuing restarts from the
// real state, so the result always equals decoding the windows one at a time.
class Recording {
 public:
  static constexpr size_t kMaxLookahead = 16;

  Recording(const DecodePlan& plan, const WindowRunner& runner, const io::Tokenizer& tok,
            const WhisperSpecialTokens& special, const std::vector<float>& samples)
      : plan_(plan), runner_(runner), tok_(tok), special_(special), samples_(samples),
        lookahead_(plan.opt->without_timestamps && !plan.opt->condition_on_previous_text &&
                   !plan.opt->word_timestamps) {}  // word timestamps seek by the last word

  bool started() const { return started_; }
  bool done() const { return done_; }
  // Seconds before the next window's start, and of content in all (faster-whisper's progress).
  double seconds_done() const {
    return static_cast<double>(done_ ? content_frames_ : std::min(seek_, content_frames_)) * kTimePerFrame;
  }
  double seconds_total() const { return static_cast<double>(content_frames_) * kTimePerFrame; }
  // Windows issued by next_request() and not consumed yet.
  size_t in_flight() const { return issued_.size(); }
  // Whether next_request() may be called now.
  bool can_issue() const {
    return started_ && !done_ && issue_clip_ < clips_.size() &&
           (issued_.empty() || (lookahead_ && issued_.size() < kMaxLookahead));
  }
  // Windows the last consume() dropped (the newest ones issued; 0 when the guess held).
  size_t discarded() const { return discarded_; }

  // features: the recording's log-mel when the caller has it already (language detection);
  // undefined = computed here.
  void begin(Tensor features = Tensor()) {
    SC_ASSERT(!started_ && !plan_.language.empty());
    started_ = true;
    result_.language = plan_.language;
    result_.duration = static_cast<double>(samples_.size()) / 16000.0;
    features_ = features.defined() ? std::move(features) : runner_.log_mel(samples_);  // on the backend's device
    total_frames_ = features_.dim(1);
    content_frames_ = total_frames_ - 1;
    clips_ = seek_clips(*plan_.opt, content_frames_);
    seek_ = issue_seek_ = clips_[0].first;
    clip_ = issue_clip_ = 0;
    normalize(seek_, clip_);
    normalize(issue_seek_, issue_clip_);
    all_tokens_ = plan_.initial_tokens;
    update_done();
  }

  // The next window: its features (zero-padded to 30 s, in a buffer of this recording that
  // stays valid until that window is consumed or discarded), the prompt and the options.
  WindowRequest next_request() {
    SC_ASSERT(can_issue());
    const int window = plan_.window_frames;
    Issued w;
    w.seek = issue_seek_;
    // The oldest window in flight is at its current attempt; one issued ahead at the first.
    w.attempt = issued_.empty() ? attempt_ : 0;
    w.size = std::min<int64_t>({plan_.chunk_frames, content_frames_ - w.seek, clip_end(issue_clip_) - w.seek});
    w.mel.assign(static_cast<size_t>(plan_.n_mels) * window, 0.0f);
    for (int m = 0; m < plan_.n_mels; ++m)
      std::memcpy(w.mel.data() + static_cast<size_t>(m) * window,
                  features_.data<float>() + m * total_frames_ + w.seek, sizeof(float) * w.size);
    // The first window in flight has the real prompt; one issued ahead guesses the reset one.
    w.prompt = prompt_since(issued_.empty() ? prompt_reset_since_ : all_tokens_.size(), w.seek);
    issue_seek_ += w.size;  // sequentially: a window without timestamp pairs seeks its whole length
    normalize(issue_seek_, issue_clip_);
    issued_.push_back(std::move(w));
    const Issued& last = issued_.back();

    WindowRequest req;
    req.mel = last.mel.data();
    req.prompt = last.prompt;
    req.options = window_for(plan_, last.attempt, last.seek);
    if (last.attempt > 0) {  // a fallback: the window whose attempts failed so far, encoded by the first
      SC_ASSERT(issued_.size() == 1 && last.seek == seek_ && !failed_.empty());
      req.encoder_output = failed_.front().result.encoder_output;
    }
    const int max_new_tokens = plan_.opt->max_new_tokens;
    if (max_new_tokens > 0) {
      req.options.max_length = static_cast<int>(req.prompt.size()) + max_new_tokens;
      SC_CHECK(req.options.max_length <= plan_.max_length, ErrorCode::kInvalidArgument, "the prompt (",
               req.prompt.size(), " tokens) plus max_new_tokens (", max_new_tokens, ") exceeds the model's ",
               plan_.max_length, " positions");
    }
    return req;
  }

  // Takes the decoded oldest issued window: skips it as silence or splits it into segments,
  // then seeks (and checks the windows issued ahead, see the class comment).
  void consume(const WindowResult& window_result) {
    SC_ASSERT(started_ && !done_ && !issued_.empty() && issued_.front().seek == seek_ &&
              issued_.front().attempt == attempt_);
    const TranscribeOptions& opt = *plan_.opt;
    const float temperature = plan_.temperatures[attempt_];
    const float cr = compression_ratio(strip(tok_.decode(window_result.tokens)));
    const double avg = window_result.avg_logprob;
    discarded_ = 0;
    if (needs_fallback(opt, cr, avg, window_result.no_speech_prob)) {
      failed_.push_back(Attempt{window_result, cr});
      if (failed_.size() > 1) failed_.back().result.encoder_output.reset();  // the same window's: keep one
      if (attempt_ + 1 < plan_.temperatures.size()) {
        // Decode this window again at the next temperature, before anything after it.
        ++attempt_;
        issued_.pop_front();
        discarded_ = issued_.size();
        issued_.clear();
        issue_seek_ = seek_;
        issue_clip_ = clip_;
        return;
      }
      // Every temperature failed: the best average log-prob among the attempts passing the
      // compression check (all of them when none does), the first on ties; the last temperature.
      std::vector<size_t> pool;
      for (size_t i = 0; i < failed_.size(); ++i)
        if (!(failed_[i].compression_ratio > opt.compression_ratio_threshold)) pool.push_back(i);
      if (pool.empty())
        for (size_t i = 0; i < failed_.size(); ++i) pool.push_back(i);
      size_t best = pool[0];
      for (size_t i : pool)
        if (failed_[i].result.avg_logprob > failed_[best].result.avg_logprob) best = i;
      Attempt chosen = std::move(failed_[best]);
      if (!chosen.result.encoder_output) chosen.result.encoder_output = failed_[0].result.encoder_output;
      failed_.clear();
      attempt_ = 0;
      consume_front(chosen.result, chosen.compression_ratio, temperature);
    } else {
      failed_.clear();
      attempt_ = 0;
      consume_front(window_result, cr, temperature);
    }
    issued_.pop_front();
    if (!issued_.empty() && (done_ || issued_.front().seek != seek_ ||
                             issued_.front().prompt != prompt_since(prompt_reset_since_, seek_))) {
      discarded_ = issued_.size();
      issued_.clear();
    }
    if (issued_.empty()) {
      issue_seek_ = seek_;
      issue_clip_ = clip_;
    }
  }

  // The segments kept so far (they grow as windows are consumed).
  const std::vector<Segment>& segments() const { return result_.segments; }

  // The finished transcription (once done()).
  Transcription take_result() {
    SC_ASSERT(done_);
    return std::move(result_);
  }

 private:
  // The prompt the sequential algorithm builds for the window at mel frame `seek` when the
  // previous-text prompt starts at all_tokens_[reset_since] (faster-whisper's get_prompt:
  // hotwords unless the window has the prefix, the previous text, the start-of-transcript
  // sequence, and the prefix in the window at frame 0).
  std::vector<int> prompt_since(size_t reset_since, int64_t seek) const {
    std::vector<int> prompt;
    const bool previous = all_tokens_.size() > reset_since;
    const bool prefix = seek == 0 && !plan_.prefix_tokens.empty();
    const bool hotwords = !plan_.hotword_tokens.empty() && !prefix;
    if (previous || hotwords) {
      prompt.push_back(tok_.sot_prev());
      if (hotwords) prompt.insert(prompt.end(), plan_.hotword_tokens.begin(), plan_.hotword_tokens.end());
    }
    if (previous) {
      const size_t avail = all_tokens_.size() - reset_since;
      const size_t keep = std::min<size_t>(avail, static_cast<size_t>(plan_.max_length / 2 - 1));
      prompt.insert(prompt.end(), all_tokens_.end() - keep, all_tokens_.end());
    }
    prompt.insert(prompt.end(), plan_.sot_sequence.begin(), plan_.sot_sequence.end());
    if (plan_.opt->without_timestamps) prompt.push_back(tok_.no_timestamps());
    if (prefix) {
      if (!plan_.opt->without_timestamps) prompt.push_back(tok_.timestamp_begin());
      prompt.insert(prompt.end(), plan_.prefix_tokens.begin(), plan_.prefix_tokens.end());
    }
    return prompt;
  }

  int64_t clip_end(size_t clip) const { return std::min(clips_[clip].second, content_frames_); }

  // faster-whisper's clip loop: moves `seek` into clip `clip` (or the next clips that still
  // have frames); clip == clips_.size() once past the last one.
  void normalize(int64_t& seek, size_t& clip) const {
    while (clip < clips_.size()) {
      if (seek < clips_[clip].first) seek = clips_[clip].first;
      if (seek < clip_end(clip)) return;
      ++clip;
      if (clip < clips_.size()) seek = clips_[clip].first;
    }
  }

  // The window's final result (cr: its compression ratio, temperature: the one reported).
  void consume_front(const WindowResult& window_result, float cr, float temperature) {
    const TranscribeOptions& opt = *plan_.opt;
    const double time_offset = static_cast<double>(seek_) * kTimePerFrame;
    const int64_t segment_size = issued_.front().size;
    const double segment_duration = static_cast<double>(segment_size) * kTimePerFrame;

    if (is_silence(opt, window_result.avg_logprob, window_result.no_speech_prob)) {
      seek_ += segment_size;  // silence: skip the window
      normalize(seek_, clip_);
      update_done();
      return;
    }

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
      segments.push_back(SplitSegment{time_offset, time_offset + duration, tokens, {}});
      seek_ += segment_size;
    }

    if (opt.word_timestamps && !word_timestamps(segments, window_result, time_offset, previous_seek, segment_size,
                                                single_timestamp_ending)) {
      update_done();  // a leading hallucination skipped: nothing of this window is kept
      return;
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
      out.avg_logprob = static_cast<float>(window_result.avg_logprob);
      out.compression_ratio = cr;
      out.no_speech_prob = window_result.no_speech_prob;
      out.temperature = temperature;
      out.words = std::move(s.words);
      result_.segments.push_back(std::move(out));
    }
    if (!opt.condition_on_previous_text || temperature > opt.prompt_reset_on_temperature)
      prompt_reset_since_ = all_tokens_.size();
    normalize(seek_, clip_);
    update_done();
  }

  // Word timestamps of the window's segments and faster-whisper's seek by the last word and
  // skipping of silence around hallucinations (hallucination_silence_threshold). Moves seek_
  // and may drop segments; false when the whole window is dropped (its first words look like
  // a hallucination after a long silence: seek to them, keep nothing, prompt unchanged).
  bool word_timestamps(std::vector<SplitSegment>& segments, const WindowResult& window_result, double time_offset,
                       int64_t previous_seek, int64_t segment_size, bool single_timestamp_ending) {
    const TranscribeOptions& opt = *plan_.opt;
    const int eot = special_.eot;
    AlignRequest req;
    req.mel = issued_.front().mel.data();
    req.encoder_output = window_result.encoder_output.get();
    req.sot_sequence = plan_.sot_sequence;
    std::string language = result_.language;
    if (window_result.language_token >= 0) {  // multilingual: the window's own language
      SC_ASSERT(req.sot_sequence.size() >= 2);
      req.sot_sequence[1] = window_result.language_token;
      language = tok_.language_code(window_result.language_token);
    }
    for (const SplitSegment& s : segments)
      for (int t : s.tokens)
        if (t < eot) req.text_tokens.push_back(t);
    req.num_frames = segment_size;
    std::vector<WordTiming> words;
    if (!req.text_tokens.empty())
      words = words_from_alignment(tok_, language, req.text_tokens, runner_.align(req, special_));
    add_word_timestamps(segments, std::move(words), previous_seek, opt.prepend_punctuations, opt.append_punctuations,
                        eot, last_speech_timestamp_);
    if (!single_timestamp_ending) {
      const std::optional<double> last_word_end = segments_end(segments);
      if (last_word_end && *last_word_end > time_offset) seek_ = std::llround(std::nearbyint(*last_word_end * 100.0));
    }
    if (opt.hallucination_silence_threshold) {
      const double threshold = *opt.hallucination_silence_threshold;
      const double segment_duration = static_cast<double>(segment_size) * kTimePerFrame;
      const double window_end_time = static_cast<double>(previous_seek + plan_.chunk_frames) * kTimePerFrame;
      const double content_duration = static_cast<double>(content_frames_) * kTimePerFrame;
      auto next_words_segment = [&](size_t from) -> const SplitSegment* {
        for (size_t i = from; i < segments.size(); ++i)
          if (!segments[i].words.empty()) return &segments[i];
        return nullptr;
      };
      // A first segment that may be a hallucination: skip the silence before it.
      const SplitSegment* first = next_words_segment(0);
      if (first != nullptr && is_segment_anomaly(first)) {
        const double gap = first->start - time_offset;
        if (gap > threshold) {
          seek_ = previous_seek + std::llround(std::nearbyint(gap * 100.0));
          return false;
        }
      }
      // Skip the silence before any possible hallucination surrounded by silence or more
      // hallucinations (and drop it and everything after it).
      double hal_last_end = last_speech_timestamp_;
      for (size_t si = 0; si < segments.size(); ++si) {
        const SplitSegment& segment = segments[si];
        if (segment.words.empty()) continue;
        if (is_segment_anomaly(&segment)) {
          const SplitSegment* next = next_words_segment(si + 1);
          const double hal_next_start = next != nullptr ? next->words.front().start : time_offset + segment_duration;
          const bool silence_before = segment.start - hal_last_end > threshold || segment.start < threshold ||
                                      segment.start - time_offset < 2.0;
          const bool silence_after = hal_next_start - segment.end > threshold || is_segment_anomaly(next) ||
                                     window_end_time - segment.end < 2.0;
          if (silence_before && silence_after) {
            seek_ = std::llround(std::nearbyint(std::max(time_offset + 1, segment.start) * 100.0));
            if (content_duration - segment.end < threshold) seek_ = content_frames_;
            segments.resize(si);
            break;
          }
        }
        hal_last_end = segment.end;
      }
    }
    if (const std::optional<double> last_word_end = segments_end(segments)) last_speech_timestamp_ = *last_word_end;
    return true;
  }

 private:
  void update_done() {
    done_ = clip_ >= clips_.size();
    if (!done_) return;
    std::string text;
    for (const Segment& s : result_.segments) text += s.text;
    result_.text = strip(text);
    features_ = Tensor();  // what a finished recording no longer needs
    std::vector<int>().swap(all_tokens_);
  }

  const DecodePlan& plan_;
  const WindowRunner& runner_;
  const io::Tokenizer& tok_;
  const WhisperSpecialTokens& special_;
  const std::vector<float>& samples_;
  const bool lookahead_;         // windows may be issued ahead (see the class comment)

  bool started_ = false;
  bool done_ = false;
  Tensor features_;              // [n_mels, total_frames] log-mel of the whole recording
  int64_t total_frames_ = 0;
  int64_t content_frames_ = 0;   // total_frames - 1 (the padding frame)
  struct Issued {
    int64_t seek = 0;            // its first mel frame
    int64_t size = 0;            // frames of content (the rest of the 30 s is zeros)
    std::vector<float> mel;      // [n_mels, window_frames]
    std::vector<int> prompt;
    size_t attempt = 0;          // index into plan.temperatures
  };
  struct Attempt {               // a failed attempt of the window at seek_
    WindowResult result;
    float compression_ratio = 0.0f;
  };
  size_t attempt_ = 0;           // the attempt of the window at seek_ being decoded
  std::vector<Attempt> failed_;  // its failed attempts so far
  std::deque<Issued> issued_;    // issued, not consumed, oldest first
  int64_t issue_seek_ = 0;       // where the next issued window starts
  size_t issue_clip_ = 0;        // in that clip
  std::vector<std::pair<int64_t, int64_t>> clips_;  // seek clips [start, end) in mel frames
  size_t clip_ = 0;              // the clip of seek_ (clips_.size(): done)
  size_t discarded_ = 0;
  std::vector<int> all_tokens_;  // the initial prompt, then every kept segment's tokens
  size_t prompt_reset_since_ = 0;
  int64_t seek_ = 0;             // mel frame where the next window starts
  double last_speech_timestamp_ = 0.0;  // word timestamps: end of the last word kept
  int segment_id_ = 0;
  Transcription result_;
};


}  // namespace speechcore::runtime
