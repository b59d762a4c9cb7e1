// speechcore::Engine: the step loop. One thread owns the scheduler, the step runner and every
// started request; submit/abort/shutdown talk to it through a mutex-protected inbox.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <string>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "core/status.h"
#include "core/thread_pool.h"
#include "engine/scheduler.h"
#include "engine/step_runner.h"
#include "io/audio.h"
#include "runtime/longform.h"
#include "runtime/model_impl.h"
#include "runtime/vad_filter.h"
#include "speechcore/engine.h"

namespace speechcore {

namespace {

struct Request {
  Engine::RequestId id = 0;
  int priority = 0;
  TranscribeOptions options;
  std::vector<float> pcm;  // as submitted (interleaved), prepared on the engine thread
  size_t frames = 0;
  int sample_rate = 16000, channels = 1;
  std::vector<float> samples;  // 16 kHz mono
  std::unique_ptr<runtime::FilteredRecording> recording;  // segments on the input's timeline
  std::deque<runtime::WindowRequest> issued;  // windows the preparation issued, not queued yet
  Engine::Callbacks callbacks;
  std::unique_ptr<Error> prepare_error;  // set by the preparation thread
  double prepare_parts[3] = {0, 0, 0};   // SPEECHCORE_PROFILE: its preparation's audio, plan, features
  size_t segments_sent = 0;
  // Its windows in flight (scheduler ids, oldest first: usually one; several when the
  // recording can look ahead), each one's request (features owned by the recording, prompt,
  // options), and results of windows that finished before an older one.
  std::deque<uint64_t> windows;
  std::unordered_map<uint64_t, runtime::WindowRequest> pending;
  std::unordered_map<uint64_t, runtime::WindowResult> results;
};

// SPEECHCORE_PROFILE=1: where the engine thread's time goes, printed to stderr when the engine
// stops (request starts: audio preparation, VAD and log-mel; scheduling; admissions: encoder,
// prefill and first pick; decoder steps; finished windows: the long-form bookkeeping).
struct EngineProfile {
  using Clock = std::chrono::steady_clock;
  const bool on = [] {
    const char* v = std::getenv("SPEECHCORE_PROFILE");
    return v != nullptr && v[0] != '\0' && v[0] != '0';
  }();
  double start_s = 0, schedule_s = 0, admit_s = 0, step_s = 0, done_s = 0;
  uint64_t starts = 0, admits = 0, admitted = 0, steps = 0, rows = 0;
  double prepare_s = 0;  // the preparation thread's wall time (written there only; read after it is joined)
  double prepare_audio_s = 0, prepare_plan_s = 0, prepare_begin_s = 0;  // parts summed over requests: audio, plan, features
  uint64_t prepared = 0;

  static double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }
  void print() const {
    if (!on || (starts == 0 && steps == 0 && admits == 0)) return;
    std::fprintf(stderr,
                 "[speechcore profile] engine: %llu requests prepared in %.3f s (summed over requests: audio %.3f s, "
                 "plan %.3f s, features %.3f s); %llu starts %.3f s; schedule %.3f s; %llu admissions of %llu windows "
                 "%.3f s (%.2f ms each, %.1f windows each); %llu steps over %llu rows %.3f s (%.3f ms each, %.1f rows "
                 "each); finished windows %.3f s\n",
                 static_cast<unsigned long long>(prepared), prepare_s, prepare_audio_s, prepare_plan_s, prepare_begin_s,
                 static_cast<unsigned long long>(starts), start_s,
                 schedule_s, static_cast<unsigned long long>(admits),
                 static_cast<unsigned long long>(admitted), admit_s, admits ? 1e3 * admit_s / admits : 0.0,
                 admits ? static_cast<double>(admitted) / admits : 0.0, static_cast<unsigned long long>(steps),
                 static_cast<unsigned long long>(rows), step_s, steps ? 1e3 * step_s / steps : 0.0,
                 steps ? static_cast<double>(rows) / steps : 0.0, done_s);
  }
};

}  // namespace

struct Engine::Impl {
  std::shared_ptr<const Model> model;
  const runtime::WhisperTranscriber& transcriber;
  EngineOptions options;
  std::unique_ptr<engine::StepRunner> runner;  // first: its memory sizes the scheduler's pool
  engine::Scheduler scheduler;

  // shared with callers (mutex)
  mutable std::mutex mutex;
  std::condition_variable wake;
  std::deque<std::unique_ptr<Request>> inbox;
  std::unordered_set<RequestId> live;     // submitted and not finished
  std::unordered_set<RequestId> aborts;   // asked to abort, not yet handled
  bool stopping = false, cancel = false;
  RequestId next_id = 1;
  EngineStats stats;

  // Requests are prepared (audio to 16 kHz mono, options checked, VAD, log-mel) on a second
  // thread, so the step loop does not wait for them: the engine thread hands each new request
  // to `to_prepare` (prep_mutex) and gets it back in `prepared` (mutex).
  std::mutex prep_mutex;
  std::condition_variable prep_wake;
  std::deque<std::unique_ptr<Request>> to_prepare;
  bool prep_stop = false;
  std::deque<std::unique_ptr<Request>> prepared;  // under `mutex`
  size_t preparing_count = 0;                      // under `mutex`: preparing.size()
  std::thread prep_thread;
  std::unique_ptr<core::ThreadPool> prep_pool;     // the preparation thread and its helpers

  // engine thread only
  std::unordered_set<RequestId> preparing;          // handed to the preparation thread
  std::unordered_set<RequestId> aborted_preparing;  // aborted meanwhile: failed when back
  std::unordered_map<RequestId, std::unique_ptr<Request>> active;
  std::unordered_map<uint64_t, Request*> by_window;
  uint64_t next_window = 1;
  double busy_seconds = 0.0;
  EngineProfile profile;
  std::thread thread;

  Impl(std::shared_ptr<const Model> m, const EngineOptions& o)
      : model(std::move(m)), transcriber(*model->impl().transcriber), options(o),
        runner(make_runner(transcriber, o)), scheduler(scheduler_config(o, runner->num_blocks())) {
    runner->set_kv(&scheduler.kv());
    const int threads = o.prepare_threads > 0 ? o.prepare_threads
                                              : std::clamp(core::ThreadPool::hardware_threads() / 4, 1, 4);
    if (threads > 1) prep_pool = std::make_unique<core::ThreadPool>(threads);
  }

  static std::unique_ptr<engine::StepRunner> make_runner(const runtime::WhisperTranscriber& t, const EngineOptions& o) {
    SC_CHECK(o.prepare_threads >= 0, ErrorCode::kInvalidArgument,
             "engine options: prepare_threads must be >= 0 (0 = automatic), got ", o.prepare_threads);
    SC_CHECK(o.max_batch >= 1 && o.max_encode_batch >= 1 && o.kv_block_size >= 1 && o.kv_blocks >= 0,
             ErrorCode::kInvalidArgument, "engine options: max_batch, max_encode_batch, kv_block_size must be >= 1 "
             "and kv_blocks >= 0 (got ", o.max_batch, ", ", o.max_encode_batch, ", ", o.kv_block_size, ", ",
             o.kv_blocks, ")");
    SC_CHECK(o.gpu_memory_fraction > 0.0 && o.gpu_memory_fraction <= 1.0, ErrorCode::kInvalidArgument,
             "engine options: gpu_memory_fraction must be in (0, 1], got ", o.gpu_memory_fraction);
    engine::StepRunnerConfig c;
    c.max_windows = o.max_batch;
    c.max_admit = o.max_encode_batch;
    c.block_size = o.kv_block_size;
    c.num_blocks = o.kv_blocks;
    c.gpu_memory_fraction = o.gpu_memory_fraction;
    return t.runner().make_step_runner(c);
  }

  static engine::SchedulerConfig scheduler_config(const EngineOptions& o, int num_blocks) {
    engine::SchedulerConfig c;
    c.max_running = o.max_batch;
    c.max_admit = o.max_encode_batch;
    c.cross_slots = o.max_batch;
    c.block_size = o.kv_block_size;
    c.num_blocks = num_blocks;
    const char* batch_admit = std::getenv("SPEECHCORE_BATCH_ADMIT");
    c.batch_admissions = batch_admit == nullptr || std::string(batch_admit) != "0";
    return c;
  }

  // ---- request lifecycle (engine thread) --------------------------------------------------

  void finished(Request& r, bool ok) {
    std::lock_guard<std::mutex> lock(mutex);
    live.erase(r.id);
    aborts.erase(r.id);
    (ok ? stats.requests_finished : stats.requests_failed) += 1;
  }

  // Forgets the request's newest `n` windows (all by default) wherever they are.
  void drop_windows(Request& r, size_t n = SIZE_MAX) {
    for (; n > 0 && !r.windows.empty(); --n) {
      const uint64_t w = r.windows.back();
      r.windows.pop_back();
      scheduler.remove(w);
      runner->release(w);
      by_window.erase(w);
      r.pending.erase(w);
      r.results.erase(w);
    }
  }

  // fail() and complete() forget the request and publish the statistics before its callback
  // runs: whoever waits on the request's future sees its windows and blocks released.
  void fail(Request& r, const Error& e) {
    const Error error = e;  // e may belong to r (its prepare_error)
    drop_windows(r);
    finished(r, false);
    auto on_error = std::move(r.callbacks.on_error);
    active.erase(r.id);  // destroys r
    publish_stats();
    if (on_error) {
      try {
        on_error(error);
      } catch (...) {  // a throwing callback must not stop the engine
      }
    }
  }

  void emit_segments(Request& r) {
    const std::vector<Segment>& segs = r.recording->segments();
    for (; r.segments_sent < segs.size(); ++r.segments_sent) {
      if (!r.callbacks.on_segment) continue;
      try {
        r.callbacks.on_segment(segs[r.segments_sent]);
      } catch (...) {
      }
    }
  }

  void complete(Request& r) {
    drop_windows(r);  // none left: a done recording discards what it issued ahead
    emit_segments(r);
    finished(r, true);
    Transcription t = r.recording->take_result();
    auto on_done = std::move(r.callbacks.on_done);
    active.erase(r.id);  // destroys r
    publish_stats();
    if (on_done) {
      try {
        on_done(std::move(t));
      } catch (...) {
      }
    }
  }

  // Queues every window the recording can issue now with the scheduler.
  void queue_windows(Request& r) {
    std::deque<runtime::WindowRequest> issued = std::move(r.issued);  // by the preparation, at first
    while (!issued.empty() || r.recording->can_issue()) {
      runtime::WindowRequest req;
      if (!issued.empty()) {
        req = std::move(issued.front());
        issued.pop_front();
      } else {
        req = r.recording->next_request();
      }
      const runtime::PromptLayout layout =
          runtime::prompt_layout(req.prompt, transcriber.special_tokens(), req.options);
      engine::SequenceSpec spec;
      spec.id = next_window++;
      spec.prompt_len = static_cast<int>(req.prompt.size());
      spec.max_new = std::max(layout.max_new, 0);
      spec.rows = runner->rows(req.options);
      spec.priority = r.priority;
      spec.order = r.id;  // the request's arrival: its later windows keep its place
      r.windows.push_back(spec.id);
      r.pending.emplace(spec.id, std::move(req));
      by_window[spec.id] = &r;
      scheduler.add(spec);
    }
  }

  // Preparation thread or one of its helpers (several requests at once): the audio at 16 kHz
  // mono, the recording (checks the options; begin() runs the VAD for vad_filter / chunked and
  // the log-mel on the backend, which is safe from several threads).
  void prepare(Request& r) {
    try {
      auto t = EngineProfile::Clock::now();
      auto lap = [&](double& into) {  // SPEECHCORE_PROFILE: the parts of a preparation
        if (!profile.on) return;
        into += EngineProfile::since(t);
        t = EngineProfile::Clock::now();
      };
      r.samples = io::prepare_audio(std::move(r.pcm), r.frames, r.sample_rate, r.channels);
      std::vector<float>().swap(r.pcm);  // (moved from, or still the submitted samples if converted)
      lap(r.prepare_parts[0]);
      r.recording = std::make_unique<runtime::FilteredRecording>(transcriber, r.options, r.samples);
      lap(r.prepare_parts[1]);
      // every attempt's search must be one the step runner has (the model's runner was checked)
      const runtime::DecodePlan& plan = r.recording->plan();
      for (size_t a = 0; a < plan.temperatures.size(); ++a)
        runtime::check_decoding_support(runtime::window_for(plan, a, 0), runner->decoding_support(),
                                        transcriber.runner().device() + " engine");
      r.recording->begin();
      // Its first windows (the features cut into 30 s windows: ~0.5 ms each for large-v3) are
      // issued here, off the engine thread, which only queues them (queue_windows).
      while (!r.recording->done() && r.recording->can_issue()) r.issued.push_back(r.recording->next_request());
      lap(r.prepare_parts[2]);
    } catch (const Error& e) {
      r.prepare_error = std::make_unique<Error>(e);
    } catch (const std::exception& e) {
      r.prepare_error = std::make_unique<Error>(ErrorCode::kInternal, e.what());
    }
  }

  // Takes the queued requests up to one admission's worth at a time, prepares them over the
  // preparation pool and hands them back together, so that under a burst the engine admits
  // (encodes) them as a batch rather than one by one as each is ready; a request arriving alone
  // comes back as soon as it is ready.
  void prepare_loop() {
    const size_t group = static_cast<size_t>(std::max(options.max_encode_batch, 1));
    for (;;) {
      std::vector<std::unique_ptr<Request>> batch;
      {
        std::unique_lock<std::mutex> lock(prep_mutex);
        prep_wake.wait(lock, [&] { return prep_stop || !to_prepare.empty(); });
        if (to_prepare.empty()) return;
        while (!to_prepare.empty() && batch.size() < group) {
          batch.push_back(std::move(to_prepare.front()));
          to_prepare.pop_front();
        }
      }
      const auto t = EngineProfile::Clock::now();
      if (prep_pool && batch.size() > 1) {
        std::atomic<size_t> next{0};  // claimed one at a time: recordings differ in length
        prep_pool->parallel_for(prep_pool->num_threads(), 1, [&](int64_t, int64_t) {
          for (size_t i; (i = next.fetch_add(1)) < batch.size();) prepare(*batch[i]);
        });
      } else {
        for (auto& r : batch) prepare(*r);
      }
      if (profile.on) {  // wall time of the preparation thread; the parts are summed over requests
        profile.prepare_s += EngineProfile::since(t);
        profile.prepared += batch.size();
        for (auto& r : batch) {
          profile.prepare_audio_s += r->prepare_parts[0];
          profile.prepare_plan_s += r->prepare_parts[1];
          profile.prepare_begin_s += r->prepare_parts[2];
        }
      }
      std::lock_guard<std::mutex> lock(mutex);
      for (auto& r : batch) prepared.push_back(std::move(r));
      wake.notify_one();
    }
  }

  void stop_preparation() {
    {
      std::lock_guard<std::mutex> lock(prep_mutex);
      prep_stop = true;
    }
    prep_wake.notify_one();
    if (prep_thread.joinable()) prep_thread.join();
  }

  // Engine thread: a prepared request starts (its windows queued) or fails.
  void start(std::unique_ptr<Request> owned) {
    Request& r = *owned;
    active.emplace(r.id, std::move(owned));
    if (r.prepare_error) return fail(r, *r.prepare_error);
    try {
      if (r.recording->done()) return complete(r);
      queue_windows(r);
    } catch (const Error& e) {
      fail(r, e);
    } catch (const std::exception& e) {
      fail(r, Error(ErrorCode::kInternal, e.what()));
    }
  }

  // Window w finished: the long-form loop consumes the finished windows in order (dropping
  // windows issued ahead on a wrong guess), then issues the next ones, or the request is done.
  void window_done(Request& r, uint64_t w, runtime::WindowResult&& result) {
    scheduler.remove(w);
    by_window.erase(w);
    r.pending.erase(w);
    r.results.emplace(w, std::move(result));
    try {
      while (!r.windows.empty() && r.results.count(r.windows.front())) {
        const uint64_t front = r.windows.front();
        r.recording->consume(r.results.at(front));
        r.results.erase(front);
        r.windows.pop_front();
        if (const size_t k = r.recording->discarded()) {
          drop_windows(r, k);
          std::lock_guard<std::mutex> lock(mutex);
          stats.windows_discarded += k;
        }
      }
      emit_segments(r);
      if (r.recording->done()) return complete(r);
      queue_windows(r);
    } catch (const Error& e) {
      fail(r, e);
    }
  }

  // Runs `fn` over the runner; on an error, fails every request with a window in `ids`.
  template <typename F>
  void guarded(const std::vector<uint64_t>& ids, F&& fn) {
    try {
      fn();
    } catch (const std::exception& ex) {
      const Error* se = dynamic_cast<const Error*>(&ex);
      const Error e = se ? *se : Error(ErrorCode::kInternal, ex.what());
      for (uint64_t w : ids) {
        auto it = by_window.find(w);
        if (it != by_window.end()) fail(*it->second, e);
      }
    }
  }

  void step() {
    const auto t0 = std::chrono::steady_clock::now();
    // Admissions an asynchronous runner finished since the last step (their encoder ran on
    // another stream): prefilled and given their first token now, then decoded from this step on.
    std::vector<uint64_t> became;
    const std::vector<uint64_t> pending = runner->pending_windows();
    if (!pending.empty()) guarded(pending, [&] { became = runner->poll(); });
    for (uint64_t w : became)
      if (scheduler.has(w) && by_window.count(w)) scheduler.set_ready(w, true);
    engine::StepPlan plan = scheduler.schedule(runner->admit_capacity());
    for (uint64_t w : plan.preempted) runner->release(w);  // recompute: the window starts over
    std::vector<engine::AdmitJob> jobs;
    for (uint64_t w : plan.admitted) {
      const runtime::WindowRequest& req = by_window.at(w)->pending.at(w);
      jobs.push_back(engine::AdmitJob{w, req.mel, req.prompt, req.options, req.encoder_output});
    }
    auto tp = EngineProfile::Clock::now();
    if (profile.on) profile.schedule_s += EngineProfile::since(t0);
    guarded(plan.admitted, [&] { runner->admit(jobs, transcriber.special_tokens()); });
    for (uint64_t w : plan.admitted)  // admitted asynchronously: no decoder step before poll() finishes it
      if (by_window.count(w) && !runner->ready(w)) scheduler.set_ready(w, false);
    if (profile.on && !jobs.empty()) {
      profile.admit_s += EngineProfile::since(tp);
      profile.admits += 1;
      profile.admitted += jobs.size();
    }
    std::vector<uint64_t> decode;
    for (uint64_t w : plan.decode)
      if (by_window.count(w)) decode.push_back(w);
    tp = EngineProfile::Clock::now();
    guarded(decode, [&] { runner->step(decode); });
    if (profile.on && !decode.empty()) {
      profile.step_s += EngineProfile::since(tp);
      profile.steps += 1;
      profile.rows += decode.size();
    }
    tp = EngineProfile::Clock::now();
    uint64_t tokens = 0;
    for (const std::vector<uint64_t>* ids : {&became, &plan.admitted, &decode}) {
      for (uint64_t w : *ids) {
        auto it = by_window.find(w);
        if (it == by_window.end() || !runner->ready(w)) continue;  // failed above, or still encoding
        ++tokens;
        if (runner->done(w)) window_done(*it->second, w, runner->take(w));
      }
    }
    // Nothing to run but admissions in flight: sleep until one of them can complete.
    if (became.empty() && plan.admitted.empty() && decode.empty() && !pending.empty())
      guarded(pending, [&] { runner->wait_pending(); });
    if (profile.on) profile.done_s += EngineProfile::since(tp);
    busy_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::lock_guard<std::mutex> lock(mutex);
    stats.steps += 1;
    stats.tokens_generated += tokens;
    stats.tokens_per_second = busy_seconds > 0 ? static_cast<double>(stats.tokens_generated) / busy_seconds : 0.0;
  }

  void publish_stats() {
    const engine::SchedulerStats s = scheduler.stats();
    std::lock_guard<std::mutex> lock(mutex);
    stats.queued_requests = inbox.size() + preparing.size() + prepared.size();
    preparing_count = preparing.size();
    stats.active_requests = active.size();
    stats.waiting_windows = s.waiting;
    stats.running_windows = s.running;
    stats.kv_blocks_total = scheduler.kv().num_blocks();
    stats.kv_blocks_used = s.blocks_used;
    stats.preemptions = s.preemptions;
  }

  void loop() {
    for (;;) {
      std::vector<std::unique_ptr<Request>> incoming, ready;
      std::vector<RequestId> to_abort;
      bool stop_now = false, cancel_all = false;
      {
        std::unique_lock<std::mutex> lock(mutex);
        wake.wait(lock, [&] {
          return (stopping && preparing.empty()) || !inbox.empty() || !aborts.empty() || !active.empty() ||
                 !prepared.empty();
        });
        while (!inbox.empty()) {
          incoming.push_back(std::move(inbox.front()));
          inbox.pop_front();
        }
        while (!prepared.empty()) {
          ready.push_back(std::move(prepared.front()));
          prepared.pop_front();
        }
        to_abort.assign(aborts.begin(), aborts.end());
        aborts.clear();
        cancel_all = stopping && cancel;
        stop_now = stopping && (cancel || (incoming.empty() && active.empty()));
      }
      const Error cancelled(ErrorCode::kCancelled, "the request was aborted");
      const Error shut_down(ErrorCode::kCancelled, "the engine was shut down");
      for (RequestId id : to_abort)
        if (preparing.count(id)) aborted_preparing.insert(id);
      for (auto& r : incoming) {
        if (cancel_all || std::find(to_abort.begin(), to_abort.end(), r->id) != to_abort.end()) {
          Request& ref = *r;
          active.emplace(ref.id, std::move(r));
          fail(ref, cancel_all ? shut_down : cancelled);
        } else {
          preparing.insert(r->id);
          std::lock_guard<std::mutex> lock(prep_mutex);
          to_prepare.push_back(std::move(r));
          prep_wake.notify_one();
        }
      }
      if (cancel_all) {  // requests still waiting for preparation fail now
        std::lock_guard<std::mutex> lock(prep_mutex);
        while (!to_prepare.empty()) {
          ready.push_back(std::move(to_prepare.front()));
          to_prepare.pop_front();
        }
      }
      for (auto& r : ready) {
        preparing.erase(r->id);
        const bool aborted = aborted_preparing.erase(r->id) > 0;
        if (cancel_all || aborted) {
          Request& ref = *r;
          active.emplace(ref.id, std::move(r));
          fail(ref, cancel_all ? shut_down : cancelled);
        } else {
          const auto ts = EngineProfile::Clock::now();
          start(std::move(r));
          if (profile.on) {
            profile.start_s += EngineProfile::since(ts);
            profile.starts += 1;
          }
        }
      }
      for (RequestId id : to_abort) {
        auto it = active.find(id);
        if (it != active.end()) fail(*it->second, cancelled);
      }
      if (cancel_all) {
        while (!active.empty()) fail(*active.begin()->second, Error(ErrorCode::kCancelled, "the engine was shut down"));
      }
      if (!scheduler.idle()) step();
      publish_stats();
      if (stop_now && active.empty() && preparing.empty()) {
        std::lock_guard<std::mutex> lock(mutex);
        if (inbox.empty()) break;
      }
    }
    stop_preparation();
    profile.print();
  }
};

Engine::Engine(std::shared_ptr<const Model> model, const EngineOptions& options) {
  SC_CHECK(model != nullptr, ErrorCode::kInvalidArgument, "Engine needs a model");
  impl_ = std::make_unique<Impl>(std::move(model), options);
  impl_->stats.kv_blocks_total = impl_->scheduler.kv().num_blocks();
  impl_->prep_thread = std::thread([this] { impl_->prepare_loop(); });
  impl_->thread = std::thread([this] { impl_->loop(); });
}

Engine::~Engine() {
  try {
    shutdown(true);
    if (impl_->thread.joinable()) impl_->thread.detach();  // destroyed from its own callback
  } catch (...) {
  }
}

Engine::RequestId Engine::submit(const float* pcm, size_t num_frames, int sample_rate, int channels,
                                 const TranscribeOptions& options, Callbacks callbacks, int priority) {
  auto r = std::make_unique<Request>();
  r->priority = priority;
  r->options = options;
  SC_CHECK(channels >= 1, ErrorCode::kInvalidAudio, "channels must be >= 1, got ", channels);
  SC_CHECK(pcm != nullptr || num_frames == 0, ErrorCode::kInvalidArgument, "submit: null audio pointer");
  r->pcm.assign(pcm, pcm + num_frames * static_cast<size_t>(channels));
  r->frames = num_frames;
  r->sample_rate = sample_rate;
  r->channels = channels;
  r->callbacks = std::move(callbacks);
  std::lock_guard<std::mutex> lock(impl_->mutex);
  SC_CHECK(!impl_->stopping, ErrorCode::kCancelled, "the engine is shut down");
  r->id = impl_->next_id++;
  const RequestId id = r->id;
  impl_->live.insert(id);
  impl_->inbox.push_back(std::move(r));
  impl_->wake.notify_one();
  return id;
}

std::future<Transcription> Engine::submit(const float* pcm, size_t num_frames, int sample_rate, int channels,
                                          const TranscribeOptions& options, int priority) {
  auto promise = std::make_shared<std::promise<Transcription>>();
  std::future<Transcription> f = promise->get_future();
  Callbacks cb;
  cb.on_done = [promise](Transcription&& t) { promise->set_value(std::move(t)); };
  cb.on_error = [promise](const Error& e) { promise->set_exception(std::make_exception_ptr(e)); };
  submit(pcm, num_frames, sample_rate, channels, options, std::move(cb), priority);
  return f;
}

bool Engine::abort(RequestId id) {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  if (!impl_->live.count(id)) return false;
  impl_->aborts.insert(id);
  impl_->wake.notify_one();
  return true;
}

void Engine::shutdown(bool cancel) {
  {
    std::lock_guard<std::mutex> lock(impl_->mutex);
    impl_->stopping = true;
    impl_->cancel = impl_->cancel || cancel;
    impl_->wake.notify_one();
  }
  // From a callback (the engine thread itself) the loop ends on its own after this step.
  if (impl_->thread.joinable() && std::this_thread::get_id() != impl_->thread.get_id()) impl_->thread.join();
}

EngineStats Engine::stats() const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  EngineStats s = impl_->stats;
  s.queued_requests = impl_->inbox.size() + impl_->preparing_count + impl_->prepared.size();
  return s;
}

}  // namespace speechcore
