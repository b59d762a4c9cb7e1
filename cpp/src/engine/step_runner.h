// What the engine asks of a backend, one scheduler step at a time: admit windows (encoder +
// prompt prefill + the first token), run one decoder step for a set of running windows, hand
// back finished windows' results, drop windows (aborted or preempted). A runner keeps each
// window's state (cross K/V, KV cache, tokens) between calls; ids are the scheduler's.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <limits>
#include <vector>

#include "engine/kv_blocks.h"
#include "runtime/whisper_decoding.h"

namespace speechcore::engine {

// How the engine sizes a runner.
struct StepRunnerConfig {
  int max_windows = 64;             // windows held at once (decoder batch, cross-attention slots)
  int max_admit = 8;                // windows admitted per step at most
  int block_size = 16;              // KV positions per block
  int num_blocks = 0;               // KV blocks; 0: the runner decides (see num_blocks())
  double gpu_memory_fraction = 0.9; // device runners: share of the GPU's memory the process may use
};

struct AdmitJob {
  uint64_t id = 0;
  const float* mel = nullptr;  // [n_mels, n_frames] host float32, valid during admit()
  std::vector<int> prompt;
  runtime::WindowOptions options;
  // A fallback attempt's window: its encoder output from the first attempt, reused by runners
  // that keep encoder outputs (the CPU); null: encode mel (runtime::WindowRequest).
  std::shared_ptr<const models::whisper::CrossKV> encoder_output;
};

class StepRunner {
 public:
  virtual ~StepRunner() = default;
  // KV blocks the runner holds memory for: the scheduler's pool. With num_blocks = 0 in the
  // config, the CPU runner takes enough for every window's whole context and the CUDA runner
  // what fits in gpu_memory_fraction of the GPU after a warm-up (see CudaStepRunner).
  virtual int num_blocks() const = 0;
  // The scheduler's block tables (set once by the engine before the first admit): window id ->
  // its blocks, covering every position admit() and step() write.
  void set_kv(const KVCacheManager* kv) { kv_ = kv; }

  // Encodes and prefills the windows and picks each one's first token (a window may be done
  // right away: end-of-text or no tokens allowed). An asynchronous runner may return before
  // that (the encoder running on another stream): those windows are not ready() until a later
  // poll() finishes their admission.
  virtual void admit(const std::vector<AdmitJob>& jobs, const runtime::WhisperSpecialTokens& special) = 0;
  // Asynchronous admission. ready(id): the window's admission is complete (its first token is
  // picked); only ready windows are stepped, done() or take()n. pending_windows(): the admitted
  // windows not ready yet. poll(): completes the admissions whose encoder has finished and
  // returns those windows (now ready). wait_pending(): blocks until at least one pending
  // admission can complete (returns at once with none pending). Synchronous runners keep the
  // defaults: every admitted window is ready.
  virtual bool ready(uint64_t /*id*/) const { return true; }
  virtual std::vector<uint64_t> pending_windows() const { return {}; }
  virtual std::vector<uint64_t> poll() { return {}; }
  virtual void wait_pending() {}
  // Windows admit() would take now without blocking the caller (an asynchronous runner whose
  // staging for the encoder is still in use); the engine admits no more than that while other
  // windows decode, so their steps do not wait for the encoder.
  virtual int admit_capacity() const { return std::numeric_limits<int>::max(); }
  // One token for each of these windows (admitted, not done).
  virtual void step(const std::vector<uint64_t>& ids) = 0;
  virtual bool done(uint64_t id) const = 0;
  // A done window's result; the runner forgets the window.
  virtual runtime::WindowResult take(uint64_t id) = 0;
  // Forgets a window in any state, a pending one included (no-op for an unknown id).
  virtual void release(uint64_t id) = 0;
  virtual size_t windows() const = 0;  // windows held
  // The searches admit() runs (the engine rejects a request needing another one up front,
  // kUnsupported); default: greedy decoding only.
  virtual runtime::DecodingSupport decoding_support() const { return {}; }
  // Decoder rows a window with these options takes in this runner's batch and KV pool (the
  // scheduler's SequenceSpec::rows): beams or sampled candidates on a batched device runner;
  // default 1 (a runner whose windows each hold their own caches).
  virtual int rows(const runtime::WindowOptions& /*options*/) const { return 1; }

 protected:
  const KVCacheManager* kv_ = nullptr;
};

}  // namespace speechcore::engine
