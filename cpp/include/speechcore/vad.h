// speechcore::vad: voice activity detection with the Silero VAD network (v5/v6 architecture),
// run by the library's own CPU code from a safetensors file (`silero_vad_16k.safetensors`, as
// shipped in the `silero-vad` package), and the speech-timestamp algorithm of faster-whisper /
// silero-vad on top of its per-window speech probabilities.
//
//   auto vad = speechcore::vad::SileroVad::load("silero_vad_16k.safetensors");
//   std::vector<float> probs = vad->speech_probs(audio16k, n);              // one per 512 samples
//   auto speech = speechcore::vad::get_speech_timestamps(*vad, audio16k, n, 16000, {});
//   auto chunks = speechcore::vad::collect_chunks(audio16k, n, speech, 30.0);  // <= 30 s groups
//   speechcore::vad::SpeechTimestampsMap map(speech, 16000);
//   double t = map.original_time(t_in_filtered_audio);                      // back to the input
//
// The model works on 16 kHz mono float audio only: other rates are refused with
// ErrorCode::kInvalidArgument (resample first, e.g. with the library's audio frontend).
// Every error is a speechcore::Error (kNotFound: missing weights file; kInvalidModel: a file
// without the expected tensors/shapes; kInvalidArgument: a bad rate, option or chunk list;
// kInvalidAudio: NaN or infinite samples). Loading sets OpenBLAS to one thread, as Model::load
// does (the library does its own threading).
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace speechcore::vad {

constexpr int kSampleRate = 16000;      // the only rate the 16 kHz network accepts
constexpr int kWindowSamples = 512;     // one speech probability per 512 new samples (32 ms)
constexpr int kContextSamples = 64;     // the previous window's last 64 samples, prepended
constexpr int kStateSize = 128;         // LSTM hidden and cell size

// The options of faster-whisper's VadOptions (same names, units and defaults), plus silero-vad's
// two options for cutting chunks longer than max_speech_duration_s.
struct VadOptions {
  // Probabilities >= threshold are speech.
  double threshold = 0.5;
  // Inside speech, only probabilities < neg_threshold count as silence; unset (the default)
  // means max(threshold - 0.15, 0.01).
  std::optional<double> neg_threshold;
  // Speech chunks not longer than this are dropped.
  double min_speech_duration_ms = 0;
  // Longer chunks are split: at the longest (use_max_poss_sil_at_max_speech) or the last
  // silence longer than min_silence_at_max_speech inside the chunk, else just before the limit.
  double max_speech_duration_s = std::numeric_limits<double>::infinity();
  // A chunk ends after this much silence.
  double min_silence_duration_ms = 2000;
  // Each chunk is padded by this much on both sides (half the gap when chunks are closer).
  double speech_pad_ms = 400;
  // Silences longer than this (ms) are candidate split points at max_speech_duration_s
  // (faster-whisper: fixed at 98; silero-vad: option, default 98).
  double min_silence_at_max_speech = 98;
  // true: split at the longest candidate silence (silero-vad >= 6 default); false: at the
  // last one (faster-whisper 1.2.1's behaviour, hence the default here).
  bool use_max_poss_sil_at_max_speech = false;

  // Throws Error(kInvalidArgument) for a NaN or out-of-range option (thresholds in [0, 1],
  // durations >= 0 and finite, max_speech_duration_s > 0 and possibly infinite).
  void validate() const;
};

// A speech chunk in samples of the audio it was found in: [start, end).
struct SpeechTimestamp {
  int64_t start = 0;
  int64_t end = 0;
  bool operator==(const SpeechTimestamp& o) const { return start == o.start && end == o.end; }
};

class SileroVad {
 public:
  // Streaming state: LSTM hidden/cell state and the last kContextSamples samples seen.
  // A fresh (zero) state starts a recording.
  struct State {
    float h[kStateSize] = {};
    float c[kStateSize] = {};
    float context[kContextSamples] = {};
    void reset();
  };

  // Loads the network from a safetensors file with the tensors of silero_vad_16k.safetensors
  // (stft_conv.weight [258,1,256], conv1..conv4 weight/bias, lstm_cell.{weight,bias}_{ih,hh},
  // final_conv.weight/bias; float32/float16/bfloat16). kNotFound if the file does not exist,
  // kInvalidModel if a tensor is missing or has another shape.
  static std::shared_ptr<SileroVad> load(const std::string& safetensors_path);
  ~SileroVad();
  SileroVad(const SileroVad&) = delete;
  SileroVad& operator=(const SileroVad&) = delete;

  const std::string& path() const;

  // Speech probability of each 512-sample window of 16 kHz audio, from a fresh state:
  // ceil(n / 512) values, the last window zero-padded (silero-vad's framing). n == 0 gives none.
  // Thread-safe (the model is immutable; each call has its own state).
  std::vector<float> speech_probs(const float* audio, size_t n) const;

  // Streaming: the probabilities of `num_windows` consecutive full windows
  // (audio[0 .. num_windows * 512)), continuing from `state` and leaving it after the last
  // window; probs receives num_windows values. Feeding a recording window by window (or in any
  // split) gives speech_probs() of the whole recording up to float rounding (~1e-7: the matrix
  // products sum in another order for other numbers of windows).
  void process(State& state, const float* audio, size_t num_windows, float* probs) const;
  // One window of exactly kWindowSamples samples.
  float process_window(State& state, const float* window) const;

 private:
  struct Weights;
  explicit SileroVad(std::unique_ptr<Weights> weights);
  std::unique_ptr<Weights> w_;
};

// faster-whisper's / silero-vad's speech-timestamp state machine over per-window probabilities
// (window i covers samples [512 i, 512 (i + 1)) of 16 kHz audio of audio_length_samples samples).
// Returns chunks in samples, padded by speech_pad_ms.
std::vector<SpeechTimestamp> speech_timestamps_from_probs(const float* probs, size_t num_windows,
                                                          int64_t audio_length_samples,
                                                          const VadOptions& options);

// speech_probs + speech_timestamps_from_probs. sample_rate must be kSampleRate.
std::vector<SpeechTimestamp> get_speech_timestamps(const SileroVad& vad, const float* audio,
                                                   size_t n, int sample_rate,
                                                   const VadOptions& options);

// Speech chunks gathered into groups of at most max_duration_s (faster-whisper's
// collect_chunks): chunks are taken in order and a new group starts when the next chunk would
// make the current one longer than max_duration_s (a single longer chunk forms its own group).
struct ChunkGroup {
  std::vector<float> audio;                // the group's chunks, concatenated
  double offset = 0;                       // seconds of speech before this group
  double duration = 0;                     // seconds in this group
  std::vector<SpeechTimestamp> segments;   // the group's chunks, in the original timeline
};
// No chunks: one empty group (as faster-whisper). Chunks must be ordered, non-overlapping and
// inside [0, n) (else kInvalidArgument).
std::vector<ChunkGroup> collect_chunks(
    const float* audio, size_t n, const std::vector<SpeechTimestamp>& chunks,
    double max_duration_s = std::numeric_limits<double>::infinity(), int sample_rate = kSampleRate);

// Maps times in the speech-only audio (the chunks concatenated) back to the original timeline
// (faster-whisper's SpeechTimestampsMap): adds the silence removed before the chunk a time
// falls in, rounded to time_precision decimals as Python's round() does.
class SpeechTimestampsMap {
 public:
  SpeechTimestampsMap(const std::vector<SpeechTimestamp>& chunks, int sample_rate = kSampleRate,
                      int time_precision = 2);
  // chunk_index < 0: found from `time` (is_end: a time exactly at a chunk's end belongs to
  // that chunk, not the next). Without chunks, times are returned unchanged (rounded).
  double original_time(double time, int64_t chunk_index = -1, bool is_end = false) const;
  int64_t chunk_index(double time, bool is_end = false) const;
  size_t num_chunks() const { return chunk_end_sample_.size(); }

 private:
  int sample_rate_;
  int time_precision_;
  std::vector<int64_t> chunk_end_sample_;
  std::vector<double> total_silence_before_;
};

}  // namespace speechcore::vad
