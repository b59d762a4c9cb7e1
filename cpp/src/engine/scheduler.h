// The engine's scheduler: a CPU object over window sequences (one 30 s window being decoded),
// token counts and KV blocks; no model, no device. Each step, schedule() admits waiting windows
// (encoder + prompt prefill, within an encoder budget, a decoder batch limit, free cross-attention
// slots and free KV blocks) and lists every running window for one decoder step, reserving the
// block each new token needs; when blocks run out it preempts the most recently ordered running
// window (recompute: the window starts over later, so its result is unchanged). Order is first
// come first served by (priority, order key), so a request's later windows keep their place.
#pragma once

#include <cstddef>
#include <cstdint>
#include <set>
#include <tuple>
#include <unordered_map>
#include <limits>
#include <vector>

#include "engine/kv_blocks.h"

namespace speechcore::engine {

struct SchedulerConfig {
  int max_running = 64;     // decoder rows at once (the decoder batch: a window of beams counts each)
  int max_admit = 8;        // windows admitted (encoded + prefilled) per step
  // While windows run and more wait than fit, admit only once max_admit of them fit, so the
  // encoder and the prompt prefill run over batches (SPEECHCORE_BATCH_ADMIT=0 in the engine
  // turns it off, for measurements).
  bool batch_admissions = true;
  int cross_slots = 64;     // windows whose encoder K/V can be held at once
  int block_size = 16;      // KV positions per block
  int num_blocks = 1792;    // KV blocks in the pool
};

struct SequenceSpec {
  uint64_t id = 0;
  int prompt_len = 1;   // tokens the prefill writes
  int max_new = 0;      // tokens it may generate (the last one is not fed back)
  int priority = 0;     // higher first
  uint64_t order = 0;   // lower first among equal priorities (request arrival)
  int rows = 1;         // decoder rows (beams, sampled candidates): KV blocks and batch rows per position
};

struct StepPlan {
  std::vector<uint64_t> admitted;   // encode + prefill (+ first token) this step
  std::vector<uint64_t> decode;     // one decoder step each
  std::vector<uint64_t> preempted;  // dropped back to waiting: the runner releases their state
  bool empty() const { return admitted.empty() && decode.empty(); }
};

struct SchedulerStats {
  size_t waiting = 0, running = 0;
  int blocks_used = 0, blocks_free = 0, cross_slots_used = 0;
  uint64_t preemptions = 0;
};

class Scheduler {
 public:
  explicit Scheduler(const SchedulerConfig& config);
  const SchedulerConfig& config() const { return config_; }

  // Queues a window. Throws kInvalidArgument for a duplicate id, kOutOfMemory when the window
  // could never fit the KV pool (prompt + max_new positions).
  void add(const SequenceSpec& spec);
  // Forgets a window (finished or aborted), freeing its blocks and slot; false when unknown.
  bool remove(uint64_t id);
  // Plans the next step (see the file comment) and books it: admitted windows hold their
  // prompt's positions, decoded ones one more position. While windows decode this step, at most
  // `admit_now` windows are admitted (what the runner takes without blocking,
  // StepRunner::admit_capacity); with nothing to decode the cap does not apply.
  StepPlan schedule(int admit_now = std::numeric_limits<int>::max());
  // An admitted window whose runner has not finished admitting it (its encoder still runs on
  // another stream: StepRunner::ready) takes no decoder step until set_ready(id, true); it keeps
  // its slot, rows and prompt blocks meanwhile. Windows are ready when admitted by default.
  void set_ready(uint64_t id, bool ready);
  // A running window that produced its last token before using its reservation can stop early:
  // same as remove().
  bool has(uint64_t id) const { return seqs_.count(id) != 0; }
  bool idle() const { return seqs_.empty(); }
  SchedulerStats stats() const;
  const KVCacheManager& kv() const { return kv_; }

 private:
  struct Seq {
    SequenceSpec spec;
    bool running = false;
    bool ready = true;  // running and admitted by the runner (see set_ready)
    int positions = 0;  // KV positions written (running windows)
  };
  using Key = std::tuple<int, uint64_t, uint64_t>;  // (-priority, order, id): smaller runs first
  static Key key(const SequenceSpec& s) { return Key(-s.priority, s.order, s.id); }
  void preempt(uint64_t id, StepPlan& plan);

  SchedulerConfig config_;
  KVCacheManager kv_;
  std::unordered_map<uint64_t, Seq> seqs_;
  std::set<Key> waiting_;
  std::set<Key> running_;
  int running_rows_ = 0;  // sum of the running windows' rows
  uint64_t preemptions_ = 0;
};

}  // namespace speechcore::engine
