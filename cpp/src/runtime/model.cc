// speechcore::Model (public API): resolves options, loads weights + tokenizer, and runs
// transcriptions through the WhisperTranscriber.
#include <sys/stat.h>

#include <algorithm>
#include <string>

#include "core/status.h"
#include "core/thread_pool.h"
#include "io/audio.h"
#include "io/tokenizer.h"
#include "models/whisper/whisper_model.h"
#include "ops/ops.h"
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
  if (use_cuda) runner = runtime::make_cuda_window_runner(weights, ct, &info.weight_bytes);
#endif
  if (!runner) {
    info.weight_bytes = weights.bytes();
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

Transcription Model::transcribe(const float* pcm, size_t num_frames, int sample_rate, int channels,
                                const TranscribeOptions& options) const {
  const std::vector<float> audio = io::prepare_audio(pcm, num_frames, sample_rate, channels);
  return impl_->transcriber->transcribe(audio, options);
}

std::vector<Transcription> Model::transcribe_batch(const std::vector<AudioRef>& audio,
                                                   const TranscribeOptions& options, int max_batch) const {
  SC_CHECK(max_batch >= 1, ErrorCode::kInvalidArgument, "max_batch must be >= 1, got ", max_batch);
  std::vector<std::vector<float>> prepared;
  prepared.reserve(audio.size());
  for (size_t i = 0; i < audio.size(); ++i) {
    const AudioRef& a = audio[i];
    try {
      prepared.push_back(io::prepare_audio(a.pcm, a.num_frames, a.sample_rate, a.channels));
    } catch (const Error& e) {
      throw Error(e.code(), "audio item " + std::to_string(i) + ": " + e.what());
    }
  }
  return impl_->transcriber->transcribe_batch(prepared, options, max_batch);
}

}  // namespace speechcore
