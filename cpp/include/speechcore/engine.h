// speechcore::Model: load a speech model once, transcribe many times (thread-safe: the
// weights are immutable and each call keeps its own decoding state).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <string>
#include <vector>

#include "speechcore/options.h"
#include "speechcore/results.h"
#include "speechcore/status.h"

namespace speechcore {

class Engine;

struct ModelInfo {
  std::string architecture;   // "whisper"
  std::string format;         // "ctranslate2" or "transformers"
  std::string path;
  bool multilingual = false;
  int n_mels = 80;
  int d_model = 0;
  int encoder_layers = 0;
  int decoder_layers = 0;
  int vocab_size = 0;
  std::string device;         // where it runs
  std::string compute_type;   // arithmetic precision
  size_t weight_bytes = 0;    // memory held by the weights
  // How a one-row decoder step runs: "cpu"; on CUDA "persistent" (one kernel for all layers),
  // "fused" (8 kernels a layer) or "unfused".
  std::string decoder_step;
  // CUDA float16/bfloat16: batches of at least this many windows keep each window's encoder
  // output and run the cross-attention with K/V absorbed into the query and output products
  // (half the bytes a decoder step, no per-layer cross K/V); 0: never (the CPU, float32, or off).
  // Set at load from SPEECHCORE_CROSS_ABSORB.
  int cross_absorb_min_windows = 0;
};

// One recording handed to Model::transcribe_batch, not copied: `num_frames` frames of
// `channels` interleaved float samples at `sample_rate` Hz (valid for the call).
struct AudioRef {
  const float* pcm = nullptr;
  size_t num_frames = 0;
  int sample_rate = 16000;
  int channels = 1;
};

class Model {
 public:
  // Loads a model directory (CTranslate2/faster-whisper or Hugging Face transformers format).
  // Throws speechcore::Error on a missing, incomplete or corrupt directory or a bad option.
  static std::shared_ptr<Model> load(const std::string& model_dir,
                                     const LoadOptions& options = LoadOptions{});
  ~Model();

  // Transcribes PCM audio: `num_frames` frames of `channels` interleaved float samples at
  // `sample_rate` Hz (mixed down to mono and resampled to 16 kHz inside).
  Transcription transcribe(const float* pcm, size_t num_frames, int sample_rate, int channels,
                           const TranscribeOptions& options = TranscribeOptions{}) const;
  // The same, calling progress(done, total) on this thread after each decoded window (and once
  // at the start): seconds of the audio transcribed so far and in all, on the timeline the
  // windows walk (the speech after a VAD filter). An exception thrown by progress stops the
  // transcription and propagates.
  using Progress = std::function<void(double done_seconds, double total_seconds)>;
  Transcription transcribe(const float* pcm, size_t num_frames, int sample_rate, int channels,
                           const TranscribeOptions& options, const Progress& progress) const;

  // Transcribes many recordings with the same options on the Engine (continuous batching):
  // a temporary Engine over this model for the call, with EngineOptions::max_batch =
  // min(max_batch, audio.size() x the rows of one window: beam_size, or best_of when a
  // temperature above 0 is listed) decoder rows (other EngineOptions at their
  // defaults); then as transcribe_batch(engine, ...) below with max_in_flight = 2 * that.
  // Result i belongs to audio[i] and equals transcribe() of that recording alone. The engine
  // (and its backend state, e.g. GPU buffers and CUDA graphs) lives for this call only: for many
  // calls, or to share the decoder with other requests, keep an Engine and use the overload
  // below. An empty list returns an empty vector (no engine). Throws speechcore::Error for a bad
  // option (checked first, no prefix), max_batch < 1, and for a bad or failed recording with a
  // message that starts with "audio item <index>: ".
  std::vector<Transcription> transcribe_batch(const std::vector<AudioRef>& audio,
                                              const TranscribeOptions& options = TranscribeOptions{},
                                              int max_batch = 64) const;

  // The same on a running `engine` created over this model, which other threads may use at the
  // same time: the options and every recording are checked first (the first bad one, by index,
  // throws); then the recordings are submitted in input order, at most `max_in_flight` at once
  // (the next when one finishes; 0 = all at once), at `priority`, and the call waits for all of
  // them. The engine copies each submitted recording and prepares it (16 kHz, log-mel), so
  // max_in_flight bounds that memory; the engine's max_batch bounds the windows decoded together.
  // When a recording fails on the engine (or the engine is shut down), the call aborts its other
  // requests, waits for them to leave the engine, and throws the failure of the lowest index,
  // "audio item <index>: " + its message, with its code (kCancelled for a shutdown).
  std::vector<Transcription> transcribe_batch(Engine& engine, const std::vector<AudioRef>& audio,
                                              const TranscribeOptions& options = TranscribeOptions{},
                                              int max_in_flight = 0, int priority = 0) const;

  // Throws the speechcore::Error that transcribe() would throw for these options (kInvalidArgument,
  // kUnsupported); returns when they are usable with this model.
  void check_options(const TranscribeOptions& options) const;

  // Detects the spoken language of PCM audio (as transcribe() takes it) with a multilingual
  // model, as faster-whisper's WhisperModel.detect_language(audio): the first `segments` 30 s
  // windows, the first whose top probability exceeds `threshold` deciding (else the majority);
  // see TranscribeOptions::language_detection_segments. Throws kInvalidArgument for an
  // English-only model, segments < 1 or a NaN threshold; audio errors as transcribe().
  LanguageDetection detect_language(const float* pcm, size_t num_frames, int sample_rate, int channels,
                                    int segments = 1, float threshold = 0.5f) const;

  const ModelInfo& info() const;

  // Diagnostics: the raw float32 logits [vocab] after `prompt` for one 30 s window of log-mel
  // features mel: [n_mels, 3000]. Used to compare backends (CPU, CUDA) on identical inputs.
  std::vector<float> prompt_logits(const float* mel, const std::vector<int>& prompt) const;
  // Diagnostics: encoder passes (30 s windows encoded) run by this model so far, by transcribe,
  // the engine and language detection together.
  uint64_t encoder_passes() const;

  struct Impl;
  explicit Model(std::unique_ptr<Impl> impl);
  Impl& impl() const { return *impl_; }

 private:
  std::unique_ptr<Impl> impl_;
};

// ---------------------------------------------------------------------------------------------
// Engine: many transcriptions at once on one model, with continuous batching. A background
// thread runs steps: each step admits waiting 30 s windows (encoder + prompt) and advances every
// running window by one token, windows of all requests together; each request's long-form loop
// feeds its next window when the previous one finishes, so its result equals Model::transcribe.

struct EngineOptions {
  // Decoder rows at once (the decoder batch), and windows held at once. A greedy window takes
  // one row; on a GPU, a beam-search window takes beam_size rows and a sampled one best_of
  // (each row its own KV cache blocks, all reading the window's one encoder output), so a
  // window's search needs max_batch >= its rows. Default 64.
  int max_batch = 64;
  // Windows admitted (encoded and prefilled) per step at most (the encoder budget). Default 8.
  int max_encode_batch = 8;
  // Self-attention KV cache: token positions per block (default 16) and blocks in the pool
  // (0 = enough for max_batch windows of the model's whole context, so nothing is preempted;
  // fewer blocks bound memory: windows queue, or restart later when a running one needs a block).
  // On a GPU, kv_blocks = 0 sizes the pool from memory instead: after a warm-up that measures
  // the encoder's activations, the pool takes what keeps the process within
  // gpu_memory_fraction of the device's memory (capped at max_batch whole contexts).
  int kv_block_size = 16;
  int kv_blocks = 0;
  double gpu_memory_fraction = 0.9;
  // Threads that prepare submitted requests (audio to 16 kHz mono, options, VAD, log-mel) off
  // the step loop; a burst of requests is prepared this many at a time, so the encoder is fed
  // sooner. 0 = a quarter of the hardware threads, between 1 and 4.
  int prepare_threads = 0;
};

struct EngineStats {
  size_t queued_requests = 0;     // submitted, not started
  size_t active_requests = 0;     // started, not finished
  size_t waiting_windows = 0;     // windows waiting for the encoder
  size_t running_windows = 0;     // windows decoding
  int kv_blocks_total = 0;
  int kv_blocks_used = 0;
  uint64_t steps = 0;
  uint64_t tokens_generated = 0;
  double tokens_per_second = 0.0; // tokens_generated / seconds spent in steps
  uint64_t preemptions = 0;
  uint64_t windows_discarded = 0; // windows issued ahead on a wrong guess and dropped (long-form look-ahead)
  uint64_t requests_finished = 0;
  uint64_t requests_failed = 0;   // errors and aborts
};

class Engine {
 public:
  using RequestId = uint64_t;
  struct Callbacks {
    // Each segment as soon as its window is decoded (in order). Runs on the engine thread.
    std::function<void(const Segment&)> on_segment;
    // The whole transcription. Runs on the engine thread; exactly one of on_done / on_error.
    std::function<void(Transcription&&)> on_done;
    // A failure: bad audio or option (the typed error), an abort or shutdown (kCancelled).
    std::function<void(const Error&)> on_error;
  };

  // Starts the engine thread over a loaded model (kept alive by the engine), and a second
  // thread that prepares new requests (audio to 16 kHz mono, option checks, the VAD, the
  // log-mel) so that a request arriving does not stall the decoding of the others. Throws
  // kUnsupported when the model's backend has no step runner yet, kInvalidArgument for bad options.
  explicit Engine(std::shared_ptr<const Model> model, const EngineOptions& options = EngineOptions{});
  ~Engine();  // shutdown(true)
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Queues a transcription of PCM audio (as Model::transcribe; the samples are copied).
  // Higher `priority` runs first; equal priorities first come first served. Thread-safe.
  // Bad options and bad audio are reported through on_error; submit itself throws only for an
  // unusable call (null samples, channels < 1) or a shut-down engine (kCancelled).
  RequestId submit(const float* pcm, size_t num_frames, int sample_rate, int channels,
                   const TranscribeOptions& options, Callbacks callbacks, int priority = 0);
  // The same with a future (errors arrive as the future's exception, a speechcore::Error).
  std::future<Transcription> submit(const float* pcm, size_t num_frames, int sample_rate, int channels,
                                    const TranscribeOptions& options = TranscribeOptions{}, int priority = 0);
  // Cancels a request (its on_error gets kCancelled, or its future that error); false when the
  // id is unknown or already finished. Thread-safe.
  bool abort(RequestId id);
  // Stops the engine: with cancel, every unfinished request fails with kCancelled; without,
  // the queued and running requests complete first. Later submits throw kCancelled. Idempotent.
  void shutdown(bool cancel = false);
  EngineStats stats() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace speechcore
