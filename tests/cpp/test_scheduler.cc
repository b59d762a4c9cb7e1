// Engine scheduler and KV block bookkeeping on the CPU with a fake runner: admission limits,
// the memory bound, preemption by recompute, first-come-first-served order, priority, abort,
// and no block leaks.
#include <algorithm>
#include <map>
#include <random>

#include "check.h"
#include "engine/kv_blocks.h"
#include "engine/scheduler.h"
#include "speechcore/status.h"

using namespace speechcore;
using namespace speechcore::engine;

SC_TEST(block_pool_all_or_nothing) {
  BlockPool p(4);
  std::vector<int> a;
  EXPECT_TRUE(p.allocate(3, a) && a.size() == 3 && p.num_free() == 1);
  std::vector<int> b;
  EXPECT_TRUE(!p.allocate(2, b) && b.empty() && p.num_free() == 1);
  p.release(a);
  EXPECT_TRUE(p.num_free() == 4);
  EXPECT_THROWS(p.release(a));  // double free
  EXPECT_THROWS(BlockPool(0));
}

SC_TEST(kv_manager_tables) {
  KVCacheManager kv(10, 16);
  EXPECT_TRUE(kv.blocks_for(1) == 1 && kv.blocks_for(16) == 1 && kv.blocks_for(17) == 2);
  EXPECT_TRUE(kv.reserve(7, 20) && kv.table(7).size() == 2 && kv.num_used() == 2);
  EXPECT_TRUE(kv.reserve(7, 32) && kv.table(7).size() == 2);  // already large enough
  EXPECT_TRUE(kv.blocks_missing(7, 33) == 1);
  EXPECT_TRUE(!kv.reserve(8, 16 * 9) && kv.table(8).empty() && kv.num_used() == 2);  // all or nothing
  kv.release(7);
  EXPECT_TRUE(kv.num_used() == 0 && kv.sequences() == 0);
}

SC_TEST(kv_manager_rows_are_block_major) {
  KVCacheManager kv(12, 16);
  EXPECT_TRUE(kv.blocks_missing(3, 20, 3) == 6);
  EXPECT_TRUE(kv.reserve(3, 10, 3) && kv.table(3).size() == 3);   // block 0 of rows 0, 1, 2
  const std::vector<int> first = kv.table(3);
  EXPECT_TRUE(kv.reserve(3, 17, 3) && kv.table(3).size() == 6);   // then block 1 of each row
  EXPECT_TRUE(std::equal(first.begin(), first.end(), kv.table(3).begin()));
  EXPECT_TRUE(!kv.reserve(4, 16 * 3, 3) && kv.table(4).empty() && kv.num_used() == 6);  // 9 > 6 free
  EXPECT_THROWS(kv.blocks_missing(3, 20, 4));  // 6 blocks are not rows of 4
  EXPECT_THROWS(kv.reserve(5, 1, 0));
  kv.release(3);
  EXPECT_TRUE(kv.num_used() == 0);
}

namespace {

// A fake engine loop: window id -> tokens it will generate before finishing.
struct Sim {
  Scheduler sched;
  std::map<uint64_t, SequenceSpec> specs;
  std::map<uint64_t, int> target, generated, positions;
  std::vector<uint64_t> finished_order;
  uint64_t preempted = 0;
  int max_running_seen = 0, max_blocks_seen = 0, max_rows_seen = 0;
  bool table_ok = true;

  explicit Sim(const SchedulerConfig& c) : sched(c) {}

  void add(uint64_t id, int prompt, int max_new, int tokens, int priority = 0, uint64_t order = 0, int rows = 1) {
    SequenceSpec s{id, prompt, max_new, priority, order ? order : id, rows};
    specs[id] = s;
    target[id] = tokens;
    sched.add(s);
  }

  void step() { apply(sched.schedule()); }

  // Books a planned step: tokens of admitted and decoded windows, finished windows removed.
  void apply(const StepPlan& p) {
    for (uint64_t id : p.preempted) {
      generated[id] = 0;  // recompute: starts over
      positions[id] = 0;
      ++preempted;
    }
    for (uint64_t id : p.admitted) {
      positions[id] = specs[id].prompt_len;
      generated[id] = 1;  // the prefill picks the first token
    }
    for (uint64_t id : p.decode) {
      positions[id] += 1;
      generated[id] += 1;
    }
    const SchedulerStats st = sched.stats();
    max_running_seen = std::max(max_running_seen, static_cast<int>(st.running));
    max_blocks_seen = std::max(max_blocks_seen, st.blocks_used);
    int rows = 0;
    for (const std::vector<uint64_t>* ids : {&p.admitted, &p.decode})
      for (uint64_t id : *ids) {
        const int r = specs[id].rows, blocks = static_cast<int>(sched.kv().table(id).size());
        rows += r;
        if (blocks % r != 0 || blocks / r * sched.config().block_size < positions[id]) table_ok = false;
      }
    max_rows_seen = std::max(max_rows_seen, rows);
    for (const std::vector<uint64_t>* ids : {&p.admitted, &p.decode})
      for (uint64_t id : *ids)
        if (generated[id] >= target[id]) {
          EXPECT_TRUE(sched.remove(id));
          finished_order.push_back(id);
        }
  }

  int run(int max_steps = 100000) {
    int steps = 0;
    while (!sched.idle() && steps < max_steps) {
      step();
      ++steps;
    }
    return steps;
  }
};

SchedulerConfig config(int running, int admit, int blocks, int block_size = 16) {
  SchedulerConfig c;
  c.max_running = running;
  c.max_admit = admit;
  c.cross_slots = running;
  c.num_blocks = blocks;
  c.block_size = block_size;
  return c;
}

}  // namespace

SC_TEST(admission_limits_and_fcfs) {
  Sim s(config(4, 2, 1000));
  for (uint64_t id = 1; id <= 10; ++id) s.add(id, 5, 100, 10);
  StepPlan p = s.sched.schedule();
  EXPECT_TRUE(p.admitted == std::vector<uint64_t>({1, 2}) && p.decode.empty());  // encoder budget 2
  p = s.sched.schedule();
  EXPECT_TRUE(p.admitted == std::vector<uint64_t>({3, 4}) && p.decode == std::vector<uint64_t>({1, 2}));
  p = s.sched.schedule();
  EXPECT_TRUE(p.admitted.empty() && p.decode.size() == 4);  // decoder batch of 4 is full
  EXPECT_TRUE(s.sched.stats().waiting == 6 && s.sched.stats().running == 4);
}

SC_TEST(admissions_capped_by_the_runner_while_windows_decode) {
  Sim s(config(8, 4, 1000));
  for (uint64_t id = 1; id <= 10; ++id) s.add(id, 5, 100, 10);
  StepPlan p = s.sched.schedule(0);  // nothing decodes yet: the cap does not apply
  EXPECT_TRUE(p.admitted == std::vector<uint64_t>({1, 2, 3, 4}) && p.decode.empty());
  p = s.sched.schedule(0);  // windows decode: a runner that would block admits none
  EXPECT_TRUE(p.admitted.empty() && p.decode.size() == 4);
  p = s.sched.schedule(2);  // room for two without blocking
  EXPECT_TRUE(p.admitted == std::vector<uint64_t>({5, 6}) && p.decode.size() == 4);
  p = s.sched.schedule(-3);  // a negative capacity admits none
  EXPECT_TRUE(p.admitted.empty() && p.decode.size() == 6);
  p = s.sched.schedule();  // no cap, but 2 free rows and 4 waiting: admissions wait for a batch
  EXPECT_TRUE(p.admitted.empty() && p.decode.size() == 6);
}

SC_TEST(admissions_come_in_batches_while_many_wait) {
  Sim s(config(4, 2, 1000));
  s.add(1, 4, 100, 3);   // finishes first
  s.add(2, 4, 100, 50);
  s.add(3, 4, 100, 50);
  s.add(4, 4, 100, 50);
  for (uint64_t id = 5; id <= 8; ++id) s.add(id, 4, 100, 50);
  s.step();  // admits 1, 2
  s.step();  // admits 3, 4
  s.step();  // 1 finishes here (3 tokens): one free slot, 4 waiting
  EXPECT_TRUE(s.finished_order == std::vector<uint64_t>({1}));
  StepPlan p = s.sched.schedule();  // one slot free, more waiting than fit: no admission of one
  EXPECT_TRUE(p.admitted.empty() && p.decode.size() == 3);
  // with only as many waiting as fit, they are admitted at once (light load: no waiting)
  Sim t(config(4, 2, 1000));
  t.add(1, 4, 100, 3);
  t.add(2, 4, 100, 50);
  t.add(3, 4, 100, 50);
  t.add(4, 4, 100, 50);
  t.step();
  t.step();
  t.step();
  t.add(5, 4, 100, 50);
  p = t.sched.schedule();
  EXPECT_TRUE(p.admitted == std::vector<uint64_t>({5}));
}

SC_TEST(all_windows_finish_in_order_without_leaks) {
  Sim s(config(8, 3, 1000));
  for (uint64_t id = 1; id <= 50; ++id) s.add(id, 4 + static_cast<int>(id % 7), 200, 20);
  s.run();
  EXPECT_TRUE(s.finished_order.size() == 50);
  EXPECT_TRUE(std::is_sorted(s.finished_order.begin(), s.finished_order.end()));  // equal lengths: FCFS
  EXPECT_TRUE(s.max_running_seen <= 8 && s.table_ok && s.preempted == 0);
  EXPECT_TRUE(s.sched.kv().num_used() == 0 && s.sched.kv().sequences() == 0);
}

SC_TEST(memory_bound_queues_and_preempts) {
  // 12 blocks of 16 positions: at most 192 positions live at once; windows need up to 4 blocks
  Sim s(config(16, 4, 12));
  std::mt19937 rng(5);
  for (uint64_t id = 1; id <= 40; ++id) {
    const int prompt = 3 + static_cast<int>(rng() % 30), tokens = 1 + static_cast<int>(rng() % 30);
    s.add(id, prompt, tokens, tokens);
  }
  const int steps = s.run();
  EXPECT_TRUE(steps < 100000);  // no livelock
  EXPECT_TRUE(s.finished_order.size() == 40);
  EXPECT_TRUE(s.max_blocks_seen <= 12 && s.table_ok);
  EXPECT_TRUE(s.preempted > 0 && s.sched.stats().preemptions == s.preempted);
  EXPECT_TRUE(s.sched.kv().num_used() == 0);
}

SC_TEST(priority_runs_first_and_order_key_keeps_place) {
  Sim s(config(1, 1, 1000));
  s.add(1, 4, 10, 3, 0, 10);
  s.add(2, 4, 10, 3, 5, 20);  // higher priority
  s.add(3, 4, 10, 3, 0, 5);   // earlier order key (an older request's later window)
  s.run();
  EXPECT_TRUE(s.finished_order == std::vector<uint64_t>({2, 3, 1}));
}

SC_TEST(abort_frees_and_bad_windows_rejected) {
  Sim s(config(4, 4, 8));
  s.add(1, 20, 30, 30);
  s.add(2, 20, 30, 30);
  s.step();
  EXPECT_TRUE(s.sched.kv().num_used() == 4);
  EXPECT_TRUE(s.sched.remove(1) && !s.sched.remove(1));
  EXPECT_TRUE(s.sched.kv().num_used() == 2);
  EXPECT_THROWS(s.sched.add(SequenceSpec{2, 4, 4, 0, 2}));           // duplicate id
  EXPECT_THROWS(s.sched.add(SequenceSpec{9, 100, 100, 0, 9}));       // can never fit 8 blocks
  EXPECT_THROWS(s.sched.add(SequenceSpec{10, 0, 4, 0, 10}));         // empty prompt
  s.run();
  EXPECT_TRUE(s.sched.idle() && s.sched.kv().num_used() == 0);
}

SC_TEST(beam_windows_count_rows_and_blocks) {
  // decoder batch of 8 rows: two windows of 4 beams, or one of 4 and four greedy ones
  Sim s(config(8, 8, 1000));
  s.add(1, 4, 100, 20, 0, 0, 4);
  s.add(2, 4, 100, 20, 0, 0, 4);
  s.add(3, 4, 100, 20);
  StepPlan p = s.sched.schedule();
  EXPECT_TRUE(p.admitted == std::vector<uint64_t>({1, 2}));  // 8 rows: window 3 waits
  EXPECT_TRUE(s.sched.kv().table(1).size() == 4 && s.sched.kv().num_used() == 8);
  EXPECT_THROWS(s.sched.add(SequenceSpec{9, 4, 4, 0, 9, 9}));  // more rows than the batch
  Sim t(config(8, 4, 1000));
  std::mt19937 rng(7);
  for (uint64_t id = 1; id <= 30; ++id) {
    const int rows = id % 3 == 0 ? 5 : (id % 3 == 1 ? 1 : 2);
    t.add(id, 3 + static_cast<int>(rng() % 20), 60, 1 + static_cast<int>(rng() % 40), 0, 0, rows);
  }
  t.run();
  EXPECT_TRUE(t.finished_order.size() == 30 && t.table_ok && t.max_rows_seen <= 8);
  EXPECT_TRUE(t.sched.kv().num_used() == 0 && t.sched.kv().sequences() == 0);
  // a tight pool: windows of 3 rows are preempted and recomputed, never overcommitted
  Sim u(config(12, 4, 24));
  for (uint64_t id = 1; id <= 20; ++id) u.add(id, 5 + static_cast<int>(id % 9), 40, 10 + static_cast<int>(id % 25), 0, 0, 3);
  const int steps = u.run();
  EXPECT_TRUE(steps < 100000 && u.finished_order.size() == 20 && u.table_ok && u.max_blocks_seen <= 24);
  EXPECT_TRUE(u.preempted > 0 && u.sched.kv().num_used() == 0);
}

SC_TEST(windows_admitted_asynchronously_wait_for_set_ready) {
  // An asynchronous runner's admission (encoder on another stream): the window keeps its slot,
  // rows and prompt blocks but takes no decoder step until set_ready(id, true); preemption and
  // removal of such a window work as for any running window.
  Sim s(config(4, 2, 1000));
  s.add(1, 5, 100, 10);
  s.add(2, 5, 100, 10);
  StepPlan p = s.sched.schedule();
  EXPECT_TRUE(p.admitted == std::vector<uint64_t>({1, 2}));
  s.sched.set_ready(2, false);
  p = s.sched.schedule();
  EXPECT_TRUE(p.decode == std::vector<uint64_t>({1}));  // 2 is still encoding
  p = s.sched.schedule();
  EXPECT_TRUE(p.decode == std::vector<uint64_t>({1}));
  EXPECT_TRUE(s.sched.kv().table(2).size() == 1);       // its prompt block only
  s.sched.set_ready(2, true);
  p = s.sched.schedule();
  EXPECT_TRUE(p.decode == std::vector<uint64_t>({1, 2}));
  EXPECT_THROWS(s.sched.set_ready(99, true));           // unknown window
  s.add(3, 5, 100, 10);
  EXPECT_THROWS(s.sched.set_ready(3, false));           // waiting, not admitted
  // a tight pool with a window of every admission pending for a few steps: same completion,
  // no leaks, pending windows preempted and readmitted (ready again after readmission)
  Sim t(config(8, 4, 16));
  std::mt19937 rng(11);
  for (uint64_t id = 1; id <= 30; ++id) t.add(id, 3 + static_cast<int>(rng() % 20), 60, 1 + static_cast<int>(rng() % 40));
  std::map<uint64_t, int> encoding;  // window -> steps left before ready
  int steps = 0;
  while (!t.sched.idle() && steps < 100000) {
    for (auto it = encoding.begin(); it != encoding.end();) {
      if (--it->second > 0 || !t.sched.has(it->first)) {
        ++it;
        continue;
      }
      t.sched.set_ready(it->first, true);
      it = encoding.erase(it);
    }
    StepPlan q = t.sched.schedule();
    for (uint64_t id : q.preempted) encoding.erase(id);
    for (uint64_t id : q.decode) EXPECT_TRUE(encoding.count(id) == 0);
    t.apply(q);
    for (size_t i = 0; i < q.admitted.size(); i += 2) {  // every other admitted window encodes 3 steps
      if (!t.sched.has(q.admitted[i])) continue;
      t.sched.set_ready(q.admitted[i], false);
      encoding[q.admitted[i]] = 3;
    }
    ++steps;
  }
  EXPECT_TRUE(steps < 100000 && t.finished_order.size() == 30 && t.table_ok);
  EXPECT_TRUE(t.sched.kv().num_used() == 0 && t.sched.kv().sequences() == 0);
}

int main() { return sctest::run_all(); }
