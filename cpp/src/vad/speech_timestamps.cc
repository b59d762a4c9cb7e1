// Speech timestamps from Silero VAD probabilities: the state machine of silero-vad's
// get_speech_timestamps_from_probs (6.x; with use_max_poss_sil_at_max_speech=false it is
// faster-whisper 1.2.1's get_speech_timestamps), faster-whisper's collect_chunks and
// SpeechTimestampsMap. Sample positions are integers as in the Python originals; the
// thresholds derived from milliseconds stay real numbers, compared as Python compares them.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include "core/status.h"
#include "speechcore/vad.h"

namespace speechcore::vad {

namespace {

void check_option(bool ok, const char* name, double value, const char* rule) {
  if (!ok) throw_error(ErrorCode::kInvalidArgument, "VAD option ", name, "=", value, ": ", rule);
}

// Python's a // b for integers (floor division).
int64_t floor_div(int64_t a, int64_t b) {
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}

// Python's round(x, digits) for a float: the exact binary value rounded to `digits` decimals
// (ties to even), read back as the nearest double. printf with %.*f rounds the exact value
// correctly (glibc), as Python's dtoa does.
double python_round(double x, int digits) {
  if (!std::isfinite(x)) return x;
  char buf[512];
  std::snprintf(buf, sizeof(buf), "%.*f", digits, x);
  return std::strtod(buf, nullptr);
}

}  // namespace

void VadOptions::validate() const {
  check_option(threshold >= 0.0 && threshold <= 1.0, "threshold", threshold, "must be in [0, 1]");
  if (neg_threshold) {
    check_option(*neg_threshold >= 0.0 && *neg_threshold <= 1.0, "neg_threshold", *neg_threshold,
                 "must be in [0, 1]");
  }
  const auto finite_nonneg = [](double v) { return std::isfinite(v) && v >= 0.0; };
  check_option(finite_nonneg(min_speech_duration_ms), "min_speech_duration_ms",
               min_speech_duration_ms, "must be finite and >= 0");
  check_option(max_speech_duration_s > 0.0, "max_speech_duration_s", max_speech_duration_s,
               "must be > 0 (inf for no limit)");
  check_option(finite_nonneg(min_silence_duration_ms), "min_silence_duration_ms",
               min_silence_duration_ms, "must be finite and >= 0");
  check_option(finite_nonneg(speech_pad_ms), "speech_pad_ms", speech_pad_ms,
               "must be finite and >= 0");
  check_option(finite_nonneg(min_silence_at_max_speech), "min_silence_at_max_speech",
               min_silence_at_max_speech, "must be finite and >= 0");
}

std::vector<SpeechTimestamp> speech_timestamps_from_probs(const float* probs, size_t num_windows,
                                                          int64_t audio_length_samples,
                                                          const VadOptions& options) {
  options.validate();
  SC_CHECK(audio_length_samples >= 0, ErrorCode::kInvalidArgument,
           "audio_length_samples must be >= 0, got ", audio_length_samples);
  SC_CHECK(num_windows == 0 || probs != nullptr, ErrorCode::kInvalidArgument,
           "speech_timestamps_from_probs: null probabilities");
  const double sr = kSampleRate;
  const int64_t window = kWindowSamples;
  // Probabilities are float32 and faster-whisper compares its numpy float32 probabilities
  // with the Python-float thresholds in float32 (NumPy 2 promotion): so do we.
  const float threshold = static_cast<float>(options.threshold);
  const float neg_threshold = static_cast<float>(
      options.neg_threshold ? *options.neg_threshold : std::max(options.threshold - 0.15, 0.01));
  const double min_speech_samples = sr * options.min_speech_duration_ms / 1000;
  const double speech_pad_samples = sr * options.speech_pad_ms / 1000;
  const double max_speech_samples =
      sr * options.max_speech_duration_s - window - 2 * speech_pad_samples;
  const double min_silence_samples = sr * options.min_silence_duration_ms / 1000;
  const double min_silence_samples_at_max_speech = sr * options.min_silence_at_max_speech / 1000;
  const bool use_max_poss = options.use_max_poss_sil_at_max_speech;

  std::vector<SpeechTimestamp> speeches;
  bool triggered = false;
  // The Python dict current_speech: empty, or with a start (and then an end when appended).
  bool has_current = false;
  int64_t current_start = 0;
  int64_t temp_end = 0;              // potential end of speech (silence tolerated so far)
  int64_t prev_end = 0, next_start = 0;  // split points for the max-speech cut
  std::vector<std::pair<int64_t, int64_t>> possible_ends;  // (silence start, silence length)

  const auto reset_current = [&] { has_current = false; };
  for (size_t i = 0; i < num_windows; ++i) {
    const float p = probs[i];
    const int64_t cur = window * static_cast<int64_t>(i);

    if (p >= threshold && temp_end) {
      const int64_t sil = cur - temp_end;
      if (static_cast<double>(sil) > min_silence_samples_at_max_speech)
        possible_ends.emplace_back(temp_end, sil);
      temp_end = 0;
      if (next_start < prev_end) next_start = cur;
    }

    if (p >= threshold && !triggered) {
      triggered = true;
      has_current = true;
      current_start = cur;
      continue;
    }

    if (triggered && static_cast<double>(cur - current_start) > max_speech_samples) {
      if (use_max_poss && !possible_ends.empty()) {
        // The longest silence (the first of equally long ones, as Python's max()).
        std::pair<int64_t, int64_t> best = possible_ends[0];
        for (const auto& e : possible_ends)
          if (e.second > best.second) best = e;
        prev_end = best.first;
        const int64_t dur = best.second;
        speeches.push_back({current_start, prev_end});
        reset_current();
        next_start = prev_end + dur;
        if (next_start < prev_end + cur) {
          has_current = true;
          current_start = next_start;
        } else {
          triggered = false;
        }
        prev_end = next_start = temp_end = 0;
        possible_ends.clear();
      } else if (prev_end) {
        speeches.push_back({current_start, prev_end});
        reset_current();
        if (next_start < prev_end) {
          triggered = false;
        } else {
          has_current = true;
          current_start = next_start;
        }
        prev_end = next_start = temp_end = 0;
        possible_ends.clear();
      } else {
        speeches.push_back({current_start, cur});
        reset_current();
        prev_end = next_start = temp_end = 0;
        triggered = false;
        possible_ends.clear();
        continue;
      }
    }

    if (p < neg_threshold && triggered) {
      if (!temp_end) temp_end = cur;
      const int64_t sil_now = cur - temp_end;
      if (!use_max_poss && static_cast<double>(sil_now) > min_silence_samples_at_max_speech)
        prev_end = temp_end;
      if (static_cast<double>(sil_now) < min_silence_samples) continue;
      // faster-whisper / silero index current_speech["start"] here; it is always set while
      // triggered.
      if (static_cast<double>(temp_end - current_start) > min_speech_samples)
        speeches.push_back({current_start, temp_end});
      reset_current();
      prev_end = next_start = temp_end = 0;
      triggered = false;
      possible_ends.clear();
      continue;
    }
  }

  if (has_current && static_cast<double>(audio_length_samples - current_start) > min_speech_samples)
    speeches.push_back({current_start, audio_length_samples});

  // Padding: int() of the float expressions truncates toward zero; all values are >= 0 there.
  const double len = static_cast<double>(audio_length_samples);
  for (size_t i = 0; i < speeches.size(); ++i) {
    SpeechTimestamp& s = speeches[i];
    if (i == 0) s.start = static_cast<int64_t>(std::max(0.0, s.start - speech_pad_samples));
    if (i + 1 != speeches.size()) {
      SpeechTimestamp& next = speeches[i + 1];
      const int64_t silence = next.start - s.end;
      if (static_cast<double>(silence) < 2 * speech_pad_samples) {
        s.end += floor_div(silence, 2);
        next.start = std::max<int64_t>(0, next.start - floor_div(silence, 2));
      } else {
        s.end = static_cast<int64_t>(std::min(len, s.end + speech_pad_samples));
        next.start = static_cast<int64_t>(std::max(0.0, next.start - speech_pad_samples));
      }
    } else {
      s.end = static_cast<int64_t>(std::min(len, s.end + speech_pad_samples));
    }
  }
  return speeches;
}

std::vector<SpeechTimestamp> get_speech_timestamps(const SileroVad& vad, const float* audio,
                                                   size_t n, int sample_rate,
                                                   const VadOptions& options) {
  SC_CHECK(sample_rate == kSampleRate, ErrorCode::kInvalidArgument,
           "Silero VAD needs 16000 Hz audio, got ", sample_rate,
           " Hz: resample it to 16 kHz first");
  options.validate();
  const std::vector<float> probs = vad.speech_probs(audio, n);
  return speech_timestamps_from_probs(probs.data(), probs.size(), static_cast<int64_t>(n), options);
}

std::vector<ChunkGroup> collect_chunks(const float* audio, size_t n,
                                       const std::vector<SpeechTimestamp>& chunks,
                                       double max_duration_s, int sample_rate) {
  SC_CHECK(sample_rate > 0, ErrorCode::kInvalidArgument, "sample_rate must be > 0, got ", sample_rate);
  SC_CHECK(max_duration_s > 0, ErrorCode::kInvalidArgument,
           "max_duration must be > 0 (inf for no limit), got ", max_duration_s);
  int64_t prev_end = 0;
  for (size_t i = 0; i < chunks.size(); ++i) {
    const SpeechTimestamp& c = chunks[i];
    SC_CHECK(c.start >= prev_end && c.end >= c.start && c.end <= static_cast<int64_t>(n),
             ErrorCode::kInvalidArgument, "speech chunk ", i, " [", c.start, ", ", c.end,
             ") is out of order, overlaps the previous one or lies outside the audio (",
             n, " samples)");
    prev_end = c.end;
  }
  SC_CHECK(chunks.empty() || audio != nullptr, ErrorCode::kInvalidArgument,
           "collect_chunks: null audio");
  std::vector<ChunkGroup> groups;
  if (chunks.empty()) {
    groups.emplace_back();
    return groups;
  }
  const double limit = max_duration_s * sample_rate;
  int64_t total = 0;      // samples in finished groups
  int64_t current = 0;    // samples in the open group
  ChunkGroup group;
  const auto close = [&] {
    group.offset = static_cast<double>(total) / sample_rate;
    group.duration = static_cast<double>(current) / sample_rate;
    total += current;
    groups.push_back(std::move(group));
    group = ChunkGroup();
    current = 0;
  };
  for (const SpeechTimestamp& c : chunks) {
    const int64_t len = c.end - c.start;
    if (current > 0 && static_cast<double>(current + len) > limit) close();
    group.segments.push_back(c);
    group.audio.insert(group.audio.end(), audio + c.start, audio + c.end);
    current += len;
  }
  close();
  return groups;
}

SpeechTimestampsMap::SpeechTimestampsMap(const std::vector<SpeechTimestamp>& chunks,
                                         int sample_rate, int time_precision)
    : sample_rate_(sample_rate), time_precision_(time_precision) {
  SC_CHECK(sample_rate > 0, ErrorCode::kInvalidArgument, "sample_rate must be > 0, got ", sample_rate);
  SC_CHECK(time_precision >= 0 && time_precision <= 9, ErrorCode::kInvalidArgument,
           "time_precision must be in [0, 9], got ", time_precision);
  int64_t previous_end = 0;
  int64_t silent = 0;
  for (const SpeechTimestamp& c : chunks) {
    silent += c.start - previous_end;
    previous_end = c.end;
    chunk_end_sample_.push_back(c.end - silent);
    total_silence_before_.push_back(static_cast<double>(silent) / sample_rate);
  }
}

int64_t SpeechTimestampsMap::chunk_index(double time, bool is_end) const {
  if (chunk_end_sample_.empty()) return -1;
  SC_CHECK(std::isfinite(time), ErrorCode::kInvalidArgument, "time must be finite, got ", time);
  const auto sample = static_cast<int64_t>(time * sample_rate_);  // Python int(): truncation
  if (is_end) {
    auto it = std::find(chunk_end_sample_.begin(), chunk_end_sample_.end(), sample);
    if (it != chunk_end_sample_.end()) return it - chunk_end_sample_.begin();
  }
  const auto pos = std::upper_bound(chunk_end_sample_.begin(), chunk_end_sample_.end(), sample) -
                   chunk_end_sample_.begin();
  return std::min<int64_t>(pos, static_cast<int64_t>(chunk_end_sample_.size()) - 1);
}

double SpeechTimestampsMap::original_time(double time, int64_t chunk_index_, bool is_end) const {
  if (chunk_end_sample_.empty()) return python_round(time, time_precision_);
  if (chunk_index_ < 0) chunk_index_ = chunk_index(time, is_end);
  SC_CHECK(chunk_index_ < static_cast<int64_t>(chunk_end_sample_.size()),
           ErrorCode::kInvalidArgument, "chunk_index ", chunk_index_, " out of range (",
           chunk_end_sample_.size(), " chunks)");
  return python_round(total_silence_before_[chunk_index_] + time, time_precision_);
}

}  // namespace speechcore::vad
