#include "engine/scheduler.h"

#include <algorithm>

#include "core/status.h"

namespace speechcore::engine {

Scheduler::Scheduler(const SchedulerConfig& c) : config_(c), kv_(c.num_blocks, c.block_size) {
  SC_CHECK(c.max_running >= 1 && c.max_admit >= 1 && c.cross_slots >= 1, ErrorCode::kInvalidArgument,
           "scheduler limits must be >= 1 (max_running ", c.max_running, ", max_admit ", c.max_admit,
           ", cross_slots ", c.cross_slots, ")");
}

void Scheduler::add(const SequenceSpec& spec) {
  SC_CHECK(seqs_.count(spec.id) == 0, ErrorCode::kInvalidArgument, "window ", spec.id, " is already scheduled");
  SC_CHECK(spec.prompt_len >= 1 && spec.max_new >= 0 && spec.rows >= 1, ErrorCode::kInvalidArgument,
           "bad window sizes: prompt ", spec.prompt_len, ", max_new ", spec.max_new, ", rows ", spec.rows);
  SC_CHECK(spec.rows <= config_.max_running, ErrorCode::kInvalidArgument, "a window of ", spec.rows,
           " rows (beams or candidates) exceeds the decoder batch (", config_.max_running, " rows)");
  const int need = kv_.blocks_for(spec.prompt_len + std::max(spec.max_new - 1, 0)) * spec.rows;
  SC_CHECK(need <= kv_.num_blocks(), ErrorCode::kOutOfMemory, "a window of ", spec.prompt_len, " + ", spec.max_new,
           " tokens in ", spec.rows, " rows needs ", need, " KV blocks; the pool has ", kv_.num_blocks());
  Seq seq;
  seq.spec = spec;
  seqs_.emplace(spec.id, seq);
  waiting_.insert(key(spec));
}

bool Scheduler::remove(uint64_t id) {
  auto it = seqs_.find(id);
  if (it == seqs_.end()) return false;
  if (it->second.running) running_rows_ -= it->second.spec.rows;
  (it->second.running ? running_ : waiting_).erase(key(it->second.spec));
  kv_.release(id);
  seqs_.erase(it);
  return true;
}

void Scheduler::preempt(uint64_t id, StepPlan& plan) {
  Seq& s = seqs_.at(id);
  SC_ASSERT(s.running);
  running_.erase(key(s.spec));
  running_rows_ -= s.spec.rows;
  kv_.release(id);
  s.running = false;
  s.ready = true;
  s.positions = 0;
  waiting_.insert(key(s.spec));
  plan.preempted.push_back(id);
  plan.decode.erase(std::remove(plan.decode.begin(), plan.decode.end(), id), plan.decode.end());
  ++preemptions_;
}

void Scheduler::set_ready(uint64_t id, bool ready) {
  auto it = seqs_.find(id);
  SC_CHECK(it != seqs_.end() && it->second.running, ErrorCode::kInternal, "set_ready: window ", id,
           " is not running");
  it->second.ready = ready;
}

StepPlan Scheduler::schedule(int admit_now) {
  StepPlan plan;
  // 1. every running window gets the position for its next token, in order; when the pool is
  //    short, the last window in order gives its blocks back (possibly the one asking).
  std::vector<uint64_t> order;
  for (const Key& k : running_) order.push_back(std::get<2>(k));
  for (uint64_t id : order) {
    if (!seqs_.at(id).running) continue;  // preempted by an earlier window of this loop
    Seq& s = seqs_.at(id);
    if (!s.ready) continue;  // its admission is still running: no token to decode yet
    bool placed = false;
    while (!placed) {
      if (kv_.reserve(id, s.positions + 1, s.spec.rows)) {
        placed = true;
        break;
      }
      const uint64_t victim = std::get<2>(*running_.rbegin());
      preempt(victim, plan);
      if (victim == id) break;
    }
    if (placed) {
      s.positions += 1;
      plan.decode.push_back(id);
    }
  }
  // 2. admit waiting windows in order while the limits allow (no admission past a window that
  //    does not fit: first come first served)
  int slots_used = static_cast<int>(running_.size());
  // Admissions come in batches: while windows run and more wait than fit, admit only once a
  // whole admission batch (max_admit windows) fits, so the encoder and the prompt prefill run
  // over several windows instead of one or two each step. (A window that waits for this waits
  // until that many running windows finish; with few waiting, as under light load, nothing waits.)
  const int free_slots = std::min(config_.max_running - running_rows_, config_.cross_slots - slots_used);
  const int batch = std::min(config_.max_admit, config_.max_running);
  if (config_.batch_admissions && !running_.empty() && free_slots < batch && static_cast<int>(waiting_.size()) > free_slots) return plan;
  const int admit_max = plan.decode.empty() ? config_.max_admit : std::min(config_.max_admit, std::max(admit_now, 0));
  while (!waiting_.empty() && static_cast<int>(plan.admitted.size()) < admit_max &&
         slots_used < config_.cross_slots) {
    const Key k = *waiting_.begin();
    const uint64_t id = std::get<2>(k);
    Seq& s = seqs_.at(id);
    if (running_rows_ + s.spec.rows > config_.max_running) break;
    // the prompt's positions now, keeping the blocks that running windows at a block boundary
    // need for their next token; a window preempted this step waits for the next one
    int boundary = 0;
    for (const Key& r : running_) {
      const Seq& q = seqs_.at(std::get<2>(r));
      if (q.positions % config_.block_size == 0) boundary += q.spec.rows;
    }
    const int need = kv_.blocks_missing(id, s.spec.prompt_len, s.spec.rows);
    if (need + boundary > kv_.num_free()) break;
    if (std::find(plan.preempted.begin(), plan.preempted.end(), id) != plan.preempted.end()) break;
    const bool ok = kv_.reserve(id, s.spec.prompt_len, s.spec.rows);
    SC_ASSERT(ok);
    waiting_.erase(waiting_.begin());
    running_.insert(k);
    running_rows_ += s.spec.rows;
    s.running = true;
    s.positions = s.spec.prompt_len;
    plan.admitted.push_back(id);
    ++slots_used;
  }
  return plan;
}

SchedulerStats Scheduler::stats() const {
  SchedulerStats st;
  st.waiting = waiting_.size();
  st.running = running_.size();
  st.blocks_used = kv_.num_used();
  st.blocks_free = kv_.num_free();
  st.cross_slots_used = static_cast<int>(running_.size());
  st.preemptions = preemptions_;
  return st;
}

}  // namespace speechcore::engine
