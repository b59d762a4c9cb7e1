#include "runtime/vad_filter.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <mutex>

#include "core/status.h"
#include "io/audio.h"
#include "runtime/language.h"

namespace speechcore::runtime {

namespace {

constexpr size_t kNone = std::numeric_limits<size_t>::max();

// Python's round(x, digits) (exact decimal rounding of the binary value, ties to even).
double python_round(double x, int digits) {
  if (!std::isfinite(x)) return x;
  char buf[512];
  std::snprintf(buf, sizeof(buf), "%.*f", digits, x);
  return std::strtod(buf, nullptr);
}

TranscribeOptions mode_options(const TranscribeOptions& o) {
  TranscribeOptions out = o;
  // Chunked: every group is independent (faster-whisper's batched pipeline decodes without the
  // previous text; a group longer than one window does not occur, see effective_vad_options).
  // Nor does it fall back: only the first temperature of the list is used.
  if (o.chunked) {
    out.condition_on_previous_text = false;
    if (out.temperature.size() > 1) out.temperature.resize(1);
  }
  // faster-whisper runs the VAD filter only without clip_timestamps
  if (!o.chunked && !o.clip_timestamps.empty()) out.vad_filter = false;
  return out;
}

// A group yields a window only when its audio holds a mel frame (Recording: content frames =
// samples / hop); shorter groups decode to nothing.
bool has_window(const vad::ChunkGroup& g) {
  return g.audio.size() >= static_cast<size_t>(io::MelOptions{}.hop_length);
}

}  // namespace

std::shared_ptr<const vad::SileroVad> vad_model(const std::string& path) {
  SC_CHECK(!path.empty(), ErrorCode::kInvalidArgument,
           "vad_filter / chunked need TranscribeOptions::vad_model_path: the path of Silero VAD's "
           "silero_vad_16k.safetensors (in the silero-vad package: pip install --no-deps \"silero-vad==6.2.3\")");
  static std::mutex mutex;
  static std::map<std::string, std::shared_ptr<const vad::SileroVad>> cache;
  std::lock_guard<std::mutex> lock(mutex);
  auto it = cache.find(path);
  if (it != cache.end()) return it->second;
  std::shared_ptr<const vad::SileroVad> model = vad::SileroVad::load(path);
  cache.emplace(path, model);
  return model;
}

// The longest merged chunk of the chunked mode: chunk_length, else 30 s.
static double chunk_seconds(const TranscribeOptions& o) {
  return o.chunk_length > 0 ? static_cast<double>(o.chunk_length) : kChunkSeconds;
}

vad::VadOptions effective_vad_options(const TranscribeOptions& o) {
  vad::VadOptions v;
  if (o.vad_parameters) {
    v = *o.vad_parameters;
  } else if (o.chunked) {
    v.min_silence_duration_ms = 160;  // BatchedInferencePipeline's defaults
    v.max_speech_duration_s = chunk_seconds(o);
  }
  if (o.chunked) v.max_speech_duration_s = std::min(v.max_speech_duration_s, chunk_seconds(o));
  v.validate();
  return v;
}

void check_vad_options(const TranscribeOptions& o) {
  SC_CHECK(!(o.chunked && !o.clip_timestamps.empty()), ErrorCode::kInvalidArgument,
           "clip_timestamps cannot be combined with chunked (the VAD chooses the chunks)");
  if (!uses_vad(o)) return;
  effective_vad_options(o);
  vad_model(o.vad_model_path);
}

FilteredRecording::FilteredRecording(const WhisperTranscriber& transcriber, const TranscribeOptions& options,
                                     const std::vector<float>& samples)
    : transcriber_(transcriber),
      mode_(options.chunked ? Mode::kChunked
            : options.vad_filter && options.clip_timestamps.empty() ? Mode::kFilter  // see mode_options
                                                                     : Mode::kPlain),
      options_(mode_options(options)),
      plan_(make_plan(transcriber.tokenizer(), transcriber.runner(), options_)),
      samples_(samples) {
  check_vad_options(options_);
}

// Language detection (plan_.detect) over a recording's features: from the first clip's start.
void FilteredRecording::detect(const Tensor& features) {
  const int64_t content = features.dim(1) - 1;
  int64_t start = 0;
  if (!options_.clip_timestamps.empty()) {
    const double frames = options_.clip_timestamps[0] * 100.0;  // faster-whisper: int(start * fps) if < content
    if (frames < static_cast<double>(content)) start = static_cast<int64_t>(frames);
  }
  // Sequential transcription reads windows of chunk_length (faster-whisper's feature extractor
  // carries it); the chunked mode's detection reads 30 s ones (BatchedInferencePipeline's).
  const int window = options_.chunked ? 0 : plan_.chunk_frames;
  LanguageDetection d = detect_language(transcriber_.runner(), transcriber_.tokenizer(), features, start,
                                        options_.language_detection_segments, options_.language_detection_threshold,
                                        window);
  set_language(plan_, transcriber_.tokenizer(), d.language);
  detection_ = std::move(d);
}

FilteredRecording::~FilteredRecording() = default;

std::pair<double, double> FilteredRecording::progress() const {
  if (mode_ != Mode::kChunked) {
    if (!single_) return {0.0, 0.0};  // no audio to walk (no speech found)
    return {single_->seconds_done(), single_->seconds_total()};
  }
  double done = 0.0, total = 0.0;
  for (size_t g = 0; g < groups_.size(); ++g) {
    total += groups_[g].duration;
    if (done_ || (g < parts_.size() && parts_[g] && parts_[g]->done())) done += groups_[g].duration;
  }
  return {done, total};
}

void FilteredRecording::begin() {
  SC_ASSERT(!started_);
  started_ = true;
  const WindowRunner& runner = transcriber_.runner();
  if (mode_ == Mode::kPlain) {
    single_ = std::make_unique<Recording>(plan_, runner, transcriber_.tokenizer(), transcriber_.special_tokens(),
                                          samples_);
    Tensor features;
    if (plan_.detect) {
      features = runner.log_mel(samples_);
      detect(features);
    }
    single_->begin(std::move(features));
    done_ = single_->done();
    return;
  }
  const std::shared_ptr<const vad::SileroVad> model = vad_model(options_.vad_model_path);
  const std::vector<vad::SpeechTimestamp> chunks = vad::get_speech_timestamps(
      *model, samples_.data(), samples_.size(), vad::kSampleRate, effective_vad_options(options_));
  if (chunks.empty()) return finish();  // no speech: nothing to decode (nor a language to detect)
  map_ = std::make_unique<vad::SpeechTimestampsMap>(chunks, vad::kSampleRate);
  if (mode_ == Mode::kFilter) {
    std::vector<vad::ChunkGroup> all = vad::collect_chunks(samples_.data(), samples_.size(), chunks);
    speech_ = std::move(all.at(0).audio);
    single_ = std::make_unique<Recording>(plan_, runner, transcriber_.tokenizer(), transcriber_.special_tokens(),
                                          speech_);
    Tensor features;
    if (plan_.detect) {
      features = runner.log_mel(speech_);
      detect(features);
    }
    single_->begin(std::move(features));
    if (single_->done()) finish();
    return;
  }
  groups_ = vad::collect_chunks(samples_.data(), samples_.size(), chunks, chunk_seconds(options_));
  if (plan_.detect) {
    // BatchedInferencePipeline: the groups' features without their last frame, concatenated,
    // plus one frame of -1.5 (only the frames detection reads are computed).
    const int n_mels = runner.config().n_mels;
    const int64_t needed = static_cast<int64_t>(options_.language_detection_segments) * runner.n_frames();
    std::vector<Tensor> parts;
    int64_t frames = 0;
    size_t g = 0;
    for (; g < groups_.size() && frames < needed; ++g) {
      if (!has_window(groups_[g])) continue;  // under one hop: no frame besides the padding one
      parts.push_back(runner.log_mel(groups_[g].audio));
      frames += parts.back().dim(1) - 1;
    }
    const bool dummy = g == groups_.size();
    Tensor features = Tensor::empty({n_mels, frames + (dummy ? 1 : 0)}, DType::kFloat32);
    float* out = features.data<float>();
    const int64_t total = features.dim(1);
    int64_t at = 0;
    for (const Tensor& p : parts) {
      const int64_t n = p.dim(1) - 1;
      for (int m = 0; m < n_mels; ++m)
        std::memcpy(out + m * total + at, p.data<float>() + m * p.dim(1), sizeof(float) * n);
      at += n;
    }
    if (dummy)
      for (int m = 0; m < n_mels; ++m) out[m * total + at] = -1.5f;
    detect(features);
  }
  // Each group keeps the offset collect_chunks gave it, so dropping one changes no other.
  groups_.erase(std::remove_if(groups_.begin(), groups_.end(), [](const vad::ChunkGroup& g) { return !has_window(g); }),
                groups_.end());
  parts_.resize(groups_.size());
  if (groups_.empty()) finish();
}

size_t FilteredRecording::next_part() const {
  for (size_t i = flushed_; i < started_parts_; ++i)
    if (!parts_[i]->done() && parts_[i]->can_issue()) return i;
  return started_parts_ < groups_.size() ? started_parts_ : kNone;
}

bool FilteredRecording::can_issue() const {
  if (!started_ || done_) return false;
  if (mode_ != Mode::kChunked) return single_->can_issue();
  return order_.size() < kMaxChunksInFlight && next_part() != kNone;
}

WindowRequest FilteredRecording::next_request() {
  SC_ASSERT(can_issue());
  if (mode_ != Mode::kChunked) return single_->next_request();
  const size_t i = next_part();
  if (i == started_parts_) {
    parts_[i] = std::make_unique<Recording>(plan_, transcriber_.runner(), transcriber_.tokenizer(),
                                            transcriber_.special_tokens(), groups_[i].audio);
    parts_[i]->begin();
    SC_CHECK(parts_[i]->can_issue(), ErrorCode::kInternal, "speech group ", i, " (", groups_[i].audio.size(),
             " samples) has no window to decode");
    ++started_parts_;
  }
  order_.push_back(i);
  return parts_[i]->next_request();
}

void FilteredRecording::consume(const WindowResult& result) {
  SC_ASSERT(started_ && !done_);
  if (mode_ != Mode::kChunked) {
    single_->consume(result);
    discarded_ = single_->discarded();
    if (mode_ == Mode::kFilter) sync_segments();
    if (single_->done()) finish();
    return;
  }
  SC_ASSERT(!order_.empty());
  const size_t i = order_.front();
  order_.pop_front();
  parts_[i]->consume(result);
  // A group's recording has one window in flight at a time (or issues ahead within its one
  // window's length), so it never discards; windows of other groups may follow it in order_.
  SC_CHECK(parts_[i]->discarded() == 0, ErrorCode::kInternal, "a speech group dropped windows issued ahead");
  discarded_ = 0;
  sync_segments();
}

void FilteredRecording::sync_segments() {
  if (mode_ == Mode::kFilter) {
    // faster-whisper's restore_speech_timestamps on the sequential segments.
    const std::vector<Segment>& segs = single_->segments();
    for (; mapped_ < segs.size(); ++mapped_) {
      Segment s = segs[mapped_];
      if (!s.words.empty()) {
        // Words: both ends by the chunk of the word's middle; the segment spans its words.
        for (Word& w : s.words) {
          const int64_t chunk = map_->chunk_index((w.start + w.end) / 2);
          w.start = map_->original_time(w.start, chunk);
          w.end = map_->original_time(w.end, chunk);
        }
        s.start = s.words.front().start;
        s.end = s.words.back().end;
        segments_.push_back(std::move(s));
        continue;
      }
      s.start = map_->original_time(s.start);
      s.end = map_->original_time(s.end, -1, /*is_end=*/true);
      segments_.push_back(std::move(s));
    }
    return;
  }
  const int timestamp_begin = transcriber_.special_tokens().timestamp_begin;
  while (flushed_ < started_parts_ && parts_[flushed_]->done()) {
    const vad::ChunkGroup& g = groups_[flushed_];
    Transcription part = parts_[flushed_]->take_result();
    for (Segment& s : part.segments) {
      // BatchedInferencePipeline: times offset by the speech before the group, rounded to 3
      // decimals, then mapped. A window without timestamps spans the group's exact duration
      // (the sequential algorithm's mel frames stop up to 10 ms short of it).
      const bool timed = std::any_of(s.tokens.begin(), s.tokens.end(), [&](int t) { return t > timestamp_begin; });
      const double start = python_round(g.offset + s.start, 3);
      const double end = python_round(timed ? g.offset + s.end : g.offset + g.duration, 3);
      s.start = map_->original_time(start);
      s.end = map_->original_time(end, -1, /*is_end=*/true);
      s.seek += static_cast<int>(g.offset * 100.0);  // mel frames (faster-whisper: int(offset * 100))
      s.id = static_cast<int>(segments_.size()) + 1;
      segments_.push_back(std::move(s));
    }
    parts_[flushed_].reset();
    std::vector<float>().swap(groups_[flushed_].audio);
    ++flushed_;
  }
  if (flushed_ == groups_.size()) finish();
}

void FilteredRecording::finish() { done_ = true; }

const std::vector<Segment>& FilteredRecording::segments() const {
  return mode_ == Mode::kPlain ? single_->segments() : segments_;
}

Transcription FilteredRecording::take_result() {
  SC_ASSERT(done_);
  Transcription t;
  if (mode_ == Mode::kPlain) {
    t = single_->take_result();
  } else {
    if (single_) t = single_->take_result();  // kFilter with speech: its text, language
    t.language = plan_.language;
    t.duration = static_cast<double>(samples_.size()) / vad::kSampleRate;
    t.segments = std::move(segments_);
    std::string text;
    for (const Segment& s : t.segments) text += s.text;
    t.text = strip(text);
  }
  if (detection_) {
    t.language_probability = detection_->probability;
    t.all_language_probs = std::move(detection_->all_language_probs);
  } else if (t.language.empty()) {
    t.language_probability = 0.0f;  // detection was asked, but there was no speech to run it on
  }
  return t;
}

}  // namespace speechcore::runtime
