// What the engine asks of a backend, one scheduler step at a time: admit windows (encoder +
// prompt prefill + the first token), run one decoder step for a set of running windows, hand
// back finished windows' results, drop windows (aborted or preempted). A runner keeps each
// window's state (cross K/V, KV cache, tokens) between calls; ids are the scheduler's.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "runtime/whisper_decoding.h"

namespace speechcore::engine {

struct AdmitJob {
  uint64_t id = 0;
  const float* mel = nullptr;  // [n_mels, n_frames] host float32, valid during admit()
  std::vector<int> prompt;
  runtime::WindowOptions options;
};

class StepRunner {
 public:
  virtual ~StepRunner() = default;
  // Encodes and prefills the windows and picks each one's first token (a window may be done
  // right away: end-of-text or no tokens allowed).
  virtual void admit(const std::vector<AdmitJob>& jobs, const runtime::WhisperSpecialTokens& special) = 0;
  // One token for each of these windows (admitted, not done).
  virtual void step(const std::vector<uint64_t>& ids) = 0;
  virtual bool done(uint64_t id) const = 0;
  // A done window's result; the runner forgets the window.
  virtual runtime::WindowResult take(uint64_t id) = 0;
  // Forgets a window in any state (no-op for an unknown id).
  virtual void release(uint64_t id) = 0;
  virtual size_t windows() const = 0;  // windows held
};

}  // namespace speechcore::engine
