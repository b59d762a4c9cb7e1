// speechcore::Model (public API): resolves options, loads weights + tokenizer, and runs
// transcriptions through the WhisperTranscriber.
#include <sys/stat.h>

#include <algorithm>
#include <condition_variable>
#include <limits>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "core/status.h"
#include "core/thread_pool.h"
#include "io/audio.h"
#include "io/tokenizer.h"
#include "models/whisper/whisper_model.h"
#include "ops/ops.h"
#include "runtime/language.h"
#include "runtime/model_impl.h"
#include "runtime/transcriber.h"
#include "speechcore/engine.h"

namespace speechcore {


Model::Model(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Model::~Model() = default;

const ModelInfo& Model::info() const { return impl_->info; }

std::shared_ptr<Model> Model::load(const std::string& model_dir, const LoadOptions& options) {
  // ---- options first: fail before touching any file
  const std::string& dev = options.device;
  SC_CHECK(dev == "auto" || dev == "cpu" || dev == "cuda", ErrorCode::kInvalidArgument, "unknown device '", dev,
           "' (expected 'auto', 'cpu' or 'cuda')");
#ifdef SPEECHCORE_WITH_CUDA
  const bool use_cuda = dev == "cuda" || (dev == "auto" && runtime::cuda_device_available());
  SC_CHECK(!(dev == "cuda" && !runtime::cuda_device_available()), ErrorCode::kUnsupported,
           "device='cuda' is not available: no usable CUDA GPU was found");
#else
  const bool use_cuda = false;
  SC_CHECK(dev != "cuda", ErrorCode::kUnsupported,
           "device='cuda' is not available: this build of speechcore has no CUDA backend");
#endif
  const std::string& ct = options.compute_type;
  SC_CHECK(ct == "auto" || ct == "float32" || ct == "float16" || ct == "bfloat16" || ct == "int8",
           ErrorCode::kInvalidArgument, "unknown compute_type '", ct,
           "' (expected 'auto', 'float32', 'float16', 'bfloat16' or 'int8')");
  SC_CHECK(ct != "int8", ErrorCode::kUnsupported, "compute_type='int8' is not implemented yet");
  SC_CHECK(use_cuda || ct == "auto" || ct == "float32", ErrorCode::kUnsupported, "compute_type='", ct,
           "' is not supported on the CPU; use 'float32' (or 'auto')");
  SC_CHECK(options.threads >= 0, ErrorCode::kInvalidArgument, "threads must be >= 0, got ", options.threads);
  const int threads = options.threads == 0 ? core::ThreadPool::hardware_threads() : options.threads;

  std::string dir = model_dir;
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  struct stat st;
  SC_CHECK(::stat(dir.c_str(), &st) == 0, ErrorCode::kNotFound, "model directory not found: ", model_dir);
  SC_CHECK(S_ISDIR(st.st_mode), ErrorCode::kInvalidModel, "model path is not a directory: ", model_dir);
  const std::string tok_path = dir + "/tokenizer.json";
  SC_CHECK(::stat(tok_path.c_str(), &st) == 0, ErrorCode::kInvalidModel, dir,
           ": missing tokenizer.json (Whisper's byte-level BPE tokenizer)");

  auto weights = models::whisper::load_whisper_weights(dir);
  std::shared_ptr<const io::Tokenizer> tokenizer = io::Tokenizer::from_file(tok_path);
  SC_CHECK(tokenizer->model_vocab_size() == weights.config.vocab_size,
           ErrorCode::kInvalidModel, dir, ": tokenizer.json (", tokenizer->model_vocab_size(),
           " tokens) does not match the model's vocabulary (", weights.config.vocab_size, ")");

  ops::set_blas_threads(1);  // our thread pool splits the products (ops::linear)
  auto impl = std::make_unique<Impl>();
  ModelInfo& info = impl->info;
  info.architecture = "whisper";
  info.format = weights.format;
  info.path = dir;
  info.multilingual = tokenizer->multilingual();
  info.n_mels = weights.config.n_mels;
  info.d_model = weights.config.d_model;
  info.encoder_layers = weights.config.encoder_layers;
  info.decoder_layers = weights.config.decoder_layers;
  info.vocab_size = weights.config.vocab_size;
  std::unique_ptr<runtime::WindowRunner> runner;
#ifdef SPEECHCORE_WITH_CUDA
  if (use_cuda) runner = runtime::make_cuda_window_runner(weights, ct, &info);
#endif
  if (!runner) {
    info.weight_bytes = weights.bytes();
    info.decoder_step = "cpu";
    impl->whisper = std::make_shared<models::whisper::WhisperModel>(std::move(weights), threads);
    runner = runtime::make_cpu_window_runner(impl->whisper);
  }
  info.device = runner->device();
  info.compute_type = runner->compute_type();
  impl->transcriber = std::make_unique<runtime::WhisperTranscriber>(std::move(runner), tokenizer);
  return std::make_shared<Model>(std::move(impl));
}

std::vector<float> Model::prompt_logits(const float* mel, const std::vector<int>& prompt) const {
  return impl_->transcriber->runner().prompt_logits(mel, prompt);
}

uint64_t Model::encoder_passes() const {
  return impl_->transcriber->runner().encoder_passes();
}

Transcription Model::transcribe(const float* pcm, size_t num_frames, int sample_rate, int channels,
                                const TranscribeOptions& options) const {
  return transcribe(pcm, num_frames, sample_rate, channels, options, Progress{});
}

Transcription Model::transcribe(const float* pcm, size_t num_frames, int sample_rate, int channels,
                                const TranscribeOptions& options, const Progress& progress) const {
  const std::vector<float> audio = io::prepare_audio(pcm, num_frames, sample_rate, channels);
  return impl_->transcriber->transcribe(audio, options, progress);
}

void Model::check_options(const TranscribeOptions& options) const { impl_->transcriber->check_options(options); }

LanguageDetection Model::detect_language(const float* pcm, size_t num_frames, int sample_rate, int channels,
                                         int segments, float threshold) const {
  const runtime::WhisperTranscriber& t = *impl_->transcriber;
  SC_CHECK(t.tokenizer().multilingual(), ErrorCode::kInvalidArgument,
           "detect_language needs a multilingual model; this one is English-only");
  SC_CHECK(segments >= 1, ErrorCode::kInvalidArgument, "segments must be >= 1, got ", segments);
  std::vector<float> audio = io::prepare_audio(pcm, num_frames, sample_rate, channels);
  // faster-whisper cuts the audio to the windows it reads before computing the features.
  const size_t keep = static_cast<size_t>(segments) * 30 * 16000;
  if (audio.size() > keep) audio.resize(keep);
  const Tensor features = t.runner().log_mel(audio);
  return runtime::detect_language(t.runner(), t.tokenizer(), features, 0, segments, threshold);
}

namespace {

// io::prepare_audio's checks that need no resampling, so that a bad recording of a batch is
// reported (by index) before any of them reaches the engine.
void check_audio(const AudioRef& a) {
  SC_CHECK(a.sample_rate > 0, ErrorCode::kInvalidArgument, "sample_rate must be > 0, got ", a.sample_rate);
  SC_CHECK(a.channels > 0, ErrorCode::kInvalidArgument, "channels must be > 0, got ", a.channels);
  SC_CHECK(a.num_frames > 0, ErrorCode::kInvalidAudio, "audio is empty");
  SC_CHECK(a.pcm != nullptr, ErrorCode::kInvalidArgument, "audio samples pointer is null");
  io::validate_audio(a.pcm, a.num_frames * static_cast<size_t>(a.channels));
}

Error item_error(size_t index, const Error& e) {
  return Error(e.code(), "audio item " + std::to_string(index) + ": " + e.what());
}

// One transcribe_batch call's requests on an engine, shared with their callbacks (which run on
// the engine thread and may outlive the call's stack frame if it unwinds).
struct BatchCall {
  std::mutex mutex;
  std::condition_variable changed;
  std::vector<Transcription> results;
  std::vector<Engine::RequestId> ids;  // 0: not submitted
  std::vector<char> live;              // submitted, callback not yet run
  std::vector<char> aborted;           // aborted by this call after a failure
  size_t outstanding = 0;
  size_t error_index = std::numeric_limits<size_t>::max();
  std::unique_ptr<Error> error;        // the failure of the lowest index so far

  explicit BatchCall(size_t n) : results(n), ids(n, 0), live(n, 0), aborted(n, 0) {}

  // (under mutex) Request i left the engine, with `e` unless it succeeded.
  void settle(size_t i, const Error* e) {
    live[i] = 0;
    --outstanding;
    // A cancellation this call asked for is not a failure of its own.
    if (e != nullptr && !(aborted[i] && e->code() == ErrorCode::kCancelled) && i < error_index) {
      error_index = i;
      error = std::make_unique<Error>(*e);
    }
    changed.notify_all();
  }
};

// The recordings (already checked) through `engine`, at most `cap` of them in it at once.
std::vector<Transcription> run_on_engine(Engine& engine, const std::vector<AudioRef>& audio,
                                         const TranscribeOptions& options, size_t cap, int priority) {
  const size_t n = audio.size();
  auto call = std::make_shared<BatchCall>(n);
  size_t next = 0;
  bool aborting = false;
  std::unique_lock<std::mutex> lock(call->mutex);
  for (;;) {
    while (!call->error && next < n && call->outstanding < cap) {
      const size_t i = next++;
      call->live[i] = 1;
      ++call->outstanding;
      lock.unlock();
      Engine::Callbacks cb;
      cb.on_done = [call, i](Transcription&& t) {
        std::lock_guard<std::mutex> g(call->mutex);
        call->results[i] = std::move(t);
        call->settle(i, nullptr);
      };
      cb.on_error = [call, i](const Error& e) {
        std::lock_guard<std::mutex> g(call->mutex);
        call->settle(i, &e);
      };
      const AudioRef& a = audio[i];
      Engine::RequestId id = 0;
      std::unique_ptr<Error> refused;
      try {
        id = engine.submit(a.pcm, a.num_frames, a.sample_rate, a.channels, options, std::move(cb), priority);
      } catch (const Error& e) {  // e.g. the engine is shut down: no callback will come
        refused = std::make_unique<Error>(e);
      }
      lock.lock();
      if (refused) {
        call->settle(i, refused.get());
      } else {
        call->ids[i] = id;
      }
    }
    if (call->error && !aborting) {
      // A failure: the other requests of this call are no longer wanted.
      aborting = true;
      std::vector<Engine::RequestId> to_abort;
      for (size_t i = 0; i < n; ++i) {
        if (call->live[i] && call->ids[i] != 0) {
          call->aborted[i] = 1;
          to_abort.push_back(call->ids[i]);
        }
      }
      lock.unlock();
      for (Engine::RequestId id : to_abort) engine.abort(id);
      lock.lock();
    }
    if (call->outstanding == 0 && (call->error || next == n)) break;
    call->changed.wait(lock);
  }
  if (call->error) throw item_error(call->error_index, *call->error);
  return std::move(call->results);
}

// Checks the options, then every recording in order (an error names its item), before
// anything is submitted.
void check_batch(const Model& model, const std::vector<AudioRef>& audio, const TranscribeOptions& options) {
  model.check_options(options);
  for (size_t i = 0; i < audio.size(); ++i) {
    try {
      check_audio(audio[i]);
    } catch (const Error& e) {
      throw item_error(i, e);
    }
  }
}

}  // namespace

std::vector<Transcription> Model::transcribe_batch(Engine& engine, const std::vector<AudioRef>& audio,
                                                   const TranscribeOptions& options, int max_in_flight,
                                                   int priority) const {
  SC_CHECK(max_in_flight >= 0, ErrorCode::kInvalidArgument, "max_in_flight must be >= 0, got ", max_in_flight);
  check_batch(*this, audio, options);
  if (audio.empty()) return {};
  const size_t cap = max_in_flight == 0 ? audio.size() : static_cast<size_t>(max_in_flight);
  return run_on_engine(engine, audio, options, cap, priority);
}

std::vector<Transcription> Model::transcribe_batch(const std::vector<AudioRef>& audio,
                                                   const TranscribeOptions& options, int max_batch) const {
  SC_CHECK(max_batch >= 1, ErrorCode::kInvalidArgument, "max_batch must be >= 1, got ", max_batch);
  check_batch(*this, audio, options);
  if (audio.empty()) return {};
  // max_batch counts decoder rows: a window's beams (or its best_of candidates when a
  // temperature above 0 may be tried) each take one.
  size_t width = static_cast<size_t>(std::max(options.beam_size, 1));
  for (float t : options.temperature)
    if (t > 0.0f) width = std::max(width, static_cast<size_t>(std::max(options.best_of, 1)));
  EngineOptions eo;
  eo.max_batch = static_cast<int>(std::min<size_t>(static_cast<size_t>(max_batch), audio.size() * width));
  // The engine lives inside this call: it may refer to this model without owning it.
  Engine engine(std::shared_ptr<const Model>(std::shared_ptr<const Model>(), this), eo);
  return run_on_engine(engine, audio, options, 2 * static_cast<size_t>(eo.max_batch), 0);
}

}  // namespace speechcore
