// The CUDA WindowRunner: encoder and decoder on the GPU, Whisper's logits rules and the
// greedy choice on the host over the downloaded float32 logits (the device greedy step and
// batching come next; see STATUS.md).
#include <mutex>

#include "models/whisper/whisper_model_cuda.h"
#include "runtime/whisper_greedy.h"

namespace speechcore::runtime {

namespace {

class CudaWindowRunner final : public WindowRunner {
 public:
  CudaWindowRunner(const models::whisper::WhisperWeights& weights, cuda::DataType dtype)
      : model_(weights, dtype) {}
  const models::whisper::WhisperConfig& config() const override { return model_.config(); }
  WindowResult run(const float* mel, const std::vector<int>& prompt, const WhisperSpecialTokens& special,
                   const WindowOptions& options) const override {
    prompt_layout(prompt, special, options);  // reject a bad prompt before the encoder runs
    std::lock_guard<std::mutex> lock(mutex_);  // one stream per model: one window at a time
    const models::whisper::CrossKVCuda cross = model_.encode(mel);
    return decode_window_greedy(model_, cross, prompt, special, options);
  }
  std::string device() const override { return "cuda"; }
  std::string compute_type() const override { return cuda::data_type_name(model_.dtype()); }
  size_t weight_bytes() const { return model_.weight_bytes(); }
  std::vector<float> prompt_logits(const float* mel, const std::vector<int>& prompt) const override {
    std::lock_guard<std::mutex> lock(mutex_);
    return runtime::prompt_logits(model_, model_.encode(mel), prompt);
  }

 private:
  models::whisper::WhisperModelCuda model_;
  mutable std::mutex mutex_;
};

}  // namespace

std::unique_ptr<WindowRunner> make_cuda_window_runner(const models::whisper::WhisperWeights& weights,
                                                      const std::string& compute_type, size_t* weight_bytes) {
  cuda::DataType dt = cuda::DataType::kFloat16;  // "auto": float16, as faster-whisper on GPUs
  if (compute_type == "float32") dt = cuda::DataType::kFloat32;
  else if (compute_type == "bfloat16") dt = cuda::DataType::kBFloat16;
  auto runner = std::make_unique<CudaWindowRunner>(weights, dt);
  if (weight_bytes) *weight_bytes = runner->weight_bytes();
  return runner;
}

bool cuda_device_available() { return cuda::device_count() > 0; }

}  // namespace speechcore::runtime
