// Transcription behind the Silero VAD (TranscribeOptions::vad_filter / ::chunked), as
// faster-whisper 1.2.1 does it:
//
// - vad_filter (WhisperModel.transcribe(vad_filter=True)): the speech chunks are concatenated
//   into one speech-only recording, transcribed with the sequential long-form algorithm, and
//   every segment's start/end is mapped back to the input's timeline (SpeechTimestampsMap:
//   start by the chunk its time falls in, end as a chunk end).
// - chunked (BatchedInferencePipeline.transcribe): the speech chunks are merged into groups of
//   at most 30 s (collect_chunks); each group is an independent recording of one window, all
//   groups are issued together (so the Engine decodes them as one batch), and the segments of
//   group g (times offset by the speech before g, rounded to 3 decimals) are mapped back the
//   same way, in group order.
//
// FilteredRecording drives either mode, or none (a plain Recording), behind the interface of
// runtime::Recording that WhisperTranscriber::transcribe and the Engine use.
#pragma once

#include <cstddef>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "runtime/longform.h"
#include "runtime/transcriber.h"
#include "speechcore/options.h"
#include "speechcore/results.h"
#include "speechcore/vad.h"

namespace speechcore::runtime {

// Groups of one chunked recording issued and not yet consumed, at most (bounds the features held).
constexpr size_t kMaxChunksInFlight = 32;
// Group length limit of chunked mode (one window).
constexpr double kChunkSeconds = 30.0;

// The Silero VAD network of a weights file, loaded once per path for the process
// (kInvalidArgument: empty path; kNotFound / kInvalidModel as SileroVad::load).
std::shared_ptr<const vad::SileroVad> vad_model(const std::string& path);

// Whether options ask for the VAD (chunked, or vad_filter without clip_timestamps: faster-whisper
// runs the VAD filter only without them).
inline bool uses_vad(const TranscribeOptions& o) { return (o.vad_filter && o.clip_timestamps.empty()) || o.chunked; }

// The VAD options a mode runs with: vad_parameters, or the mode's defaults when unset
// (chunked: min_silence_duration_ms = 160, max_speech_duration_s = 30); in chunked mode
// max_speech_duration_s is capped at 30. Validated (kInvalidArgument).
vad::VadOptions effective_vad_options(const TranscribeOptions& o);

// Checks the VAD options when the VAD is on: the VAD options, and the weights (loaded and
// cached here). Throws kInvalidArgument (no vad_model_path, bad option), kNotFound,
// kInvalidModel.
void check_vad_options(const TranscribeOptions& o);

// A recording (16 kHz mono samples, referenced: they must outlive it) transcribed with
// `options`, through the VAD when they ask for it. The interface of runtime::Recording:
// begin(), then next_request() while can_issue() and consume() of the issued windows in issue
// order, until done(). The constructor checks every option (make_plan + check_vad_options);
// begin() runs the VAD.
class FilteredRecording {
 public:
  // The decoding plan (options as the windows get them; every attempt's search).
  const DecodePlan& plan() const { return plan_; }
  FilteredRecording(const WhisperTranscriber& transcriber, const TranscribeOptions& options,
                    const std::vector<float>& samples);
  FilteredRecording(const FilteredRecording&) = delete;
  FilteredRecording& operator=(const FilteredRecording&) = delete;
  ~FilteredRecording();

  void begin();
  bool done() const { return done_; }
  bool can_issue() const;
  // Chunked mode: its windows are independent, so all that can_issue() may be decoded together.
  bool chunked() const { return mode_ == Mode::kChunked; }
  WindowRequest next_request();
  void consume(const WindowResult& result);
  // Windows the last consume() dropped (the newest issued), as Recording::discarded().
  size_t discarded() const { return discarded_; }
  // The segments so far, on the input's timeline (they only grow; chunked: in group order).
  const std::vector<Segment>& segments() const;
  Transcription take_result();
  // (seconds transcribed, seconds in all) on the windows' timeline (after begin()): the seek
  // position of a plain / filtered recording (faster-whisper's progress bar), the groups done of
  // a chunked one; (0, 0) when the VAD found no speech.
  std::pair<double, double> progress() const;

 private:
  enum class Mode { kPlain, kFilter, kChunked };
  size_t next_part() const;  // chunked: the group next_request() issues from, or npos
  void sync_segments();      // filter/chunked: maps what the recording(s) added to segments_
  void finish();
  void detect(const Tensor& features);  // plan_.detect: detects the language, sets plan_'s

  const WhisperTranscriber& transcriber_;
  const Mode mode_;
  TranscribeOptions options_;  // chunked: condition_on_previous_text off
  DecodePlan plan_;            // points at options_
  const std::vector<float>& samples_;
  bool started_ = false, done_ = false;
  size_t discarded_ = 0;

  std::vector<float> speech_;                    // kFilter: the speech chunks concatenated
  std::unique_ptr<vad::SpeechTimestampsMap> map_;
  std::unique_ptr<Recording> single_;            // kPlain / kFilter
  size_t mapped_ = 0;                            // kFilter: single_'s segments in segments_

  std::vector<vad::ChunkGroup> groups_;          // kChunked
  std::vector<std::unique_ptr<Recording>> parts_;  // one per group, created on first issue
  size_t started_parts_ = 0;                     // groups [0, started_parts_) started
  size_t flushed_ = 0;                           // groups whose segments are in segments_
  std::deque<size_t> order_;                     // group of each window in flight, oldest first

  std::vector<Segment> segments_;
  Transcription result_;
  std::optional<LanguageDetection> detection_;   // when the language was detected
};

}  // namespace speechcore::runtime
