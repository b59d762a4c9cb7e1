// speechcore::Engine for Python: callbacks run on the engine thread and take the GIL; every
// blocking call (shutdown, the destructor) releases it, so the engine thread can always finish
// a callback while Python waits.
#include <pybind11/functional.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <condition_variable>
#include <mutex>
#include <thread>

#include "bindings.h"
#include "speechcore/engine.h"

namespace py = pybind11;

namespace speechcore::bindings {

namespace {

// The engine whose thread is running one of its callbacks on this thread (null elsewhere).
thread_local const Engine* current_engine = nullptr;

struct InEngineThread {
  const Engine* saved;
  explicit InEngineThread(const Engine* e) : saved(current_engine) { current_engine = e; }
  ~InEngineThread() { current_engine = saved; }
};

// Engines being destroyed by helper threads (see GilFreeDelete).
std::mutex helpers_mutex;
std::condition_variable helpers_done;
int helpers_running = 0;

// Destroys the engine (joining its thread) with the GIL released. When the last reference
// goes away on the engine's own thread (inside one of its callbacks, or as a callback's Python
// objects are dropped), that thread cannot join itself: a helper thread destroys the engine
// once the callback has returned (at interpreter exit, wait_for_helpers() waits for it).
struct GilFreeDelete {
  void operator()(Engine* e) const {
    if (current_engine == e) {
      std::lock_guard<std::mutex> lock(helpers_mutex);
      ++helpers_running;
      std::thread([e] {
        delete e;
        std::lock_guard<std::mutex> done(helpers_mutex);
        if (--helpers_running == 0) helpers_done.notify_all();
      }).detach();
      return;
    }
    py::gil_scoped_release release;
    delete e;
  }
};

void wait_for_helpers() {
  py::gil_scoped_release release;  // their engines' last callbacks may need the GIL
  std::unique_lock<std::mutex> lock(helpers_mutex);
  helpers_done.wait(lock, [] { return helpers_running == 0; });
}

// Calls a Python callable from the engine thread; a raising callback is reported through
// sys.unraisablehook instead of escaping into C++.
void call_python(const py::object& fn, const py::object& arg) {
  if (fn.is_none()) return;
  try {
    fn(arg);
  } catch (py::error_already_set& e) {
    e.discard_as_unraisable("speechcore engine callback");
  }
}

// Holds a Python object for the engine thread: destroyed under the GIL (on the engine thread
// of `engine`, or wherever the request's callbacks are dropped).
struct PyRef {
  py::object obj;
  const Engine* engine;
  PyRef(py::object o, const Engine* e) : obj(std::move(o)), engine(e) {}
  ~PyRef() {
    InEngineThread mark(engine);
    py::gil_scoped_acquire gil;
    obj = py::object();
  }
};

py::dict stats_dict(const EngineStats& s) {
  py::dict d;
  d["queued_requests"] = s.queued_requests;
  d["active_requests"] = s.active_requests;
  d["waiting_windows"] = s.waiting_windows;
  d["running_windows"] = s.running_windows;
  d["kv_blocks_total"] = s.kv_blocks_total;
  d["kv_blocks_used"] = s.kv_blocks_used;
  d["kv_blocks_free"] = s.kv_blocks_total - s.kv_blocks_used;
  d["steps"] = s.steps;
  d["tokens_generated"] = s.tokens_generated;
  d["tokens_per_second"] = s.tokens_per_second;
  d["preemptions"] = s.preemptions;
  d["windows_discarded"] = s.windows_discarded;
  d["requests_finished"] = s.requests_finished;
  d["requests_failed"] = s.requests_failed;
  return d;
}

}  // namespace

void register_engine(py::module_& m) {
  py::class_<Engine, std::unique_ptr<Engine, GilFreeDelete>>(m, "Engine")
      .def(py::init([](std::shared_ptr<Model> model, int max_batch, int max_encode_batch, int kv_block_size,
                       int kv_blocks, double gpu_memory_fraction, int prepare_threads) {
             EngineOptions o;
             o.max_batch = max_batch;
             o.max_encode_batch = max_encode_batch;
             o.kv_block_size = kv_block_size;
             o.kv_blocks = kv_blocks;
             o.gpu_memory_fraction = gpu_memory_fraction;
             o.prepare_threads = prepare_threads;
             py::gil_scoped_release release;
             return std::unique_ptr<Engine, GilFreeDelete>(new Engine(std::move(model), o));
           }),
           py::arg("model"), py::arg("max_batch") = 64, py::arg("max_encode_batch") = 8, py::arg("kv_block_size") = 16,
           py::arg("kv_blocks") = 0, py::arg("gpu_memory_fraction") = 0.9, py::arg("prepare_threads") = 0)
      .def(
          "submit",
          [](Engine& self, const py::array& audio, int sample_rate, const py::dict& options, py::object on_done,
             py::object on_error, py::object on_segment, int priority) {
            const AudioRef a = audio_ref(audio, sample_rate, "audio");
            const TranscribeOptions opts = parse_transcribe_options(options);
            const Engine* eng = &self;
            auto done = std::make_shared<PyRef>(std::move(on_done), eng);
            auto error = std::make_shared<PyRef>(std::move(on_error), eng);
            auto segment = std::make_shared<PyRef>(std::move(on_segment), eng);
            Engine::Callbacks cb;
            cb.on_done = [done, eng](Transcription&& t) {
              InEngineThread mark(eng);
              py::gil_scoped_acquire gil;
              call_python(done->obj, transcription_dict(t));
            };
            cb.on_error = [error, eng](const Error& e) {
              InEngineThread mark(eng);
              py::gil_scoped_acquire gil;
              call_python(error->obj, python_error(e));
            };
            if (!segment->obj.is_none())
              cb.on_segment = [segment, eng](const Segment& s) {
                InEngineThread mark(eng);
                py::gil_scoped_acquire gil;
                call_python(segment->obj, segment_dict(s));
              };
            // the samples are copied inside submit (cheap next to decoding)
            return self.submit(a.pcm, a.num_frames, a.sample_rate, a.channels, opts, std::move(cb), priority);
          },
          py::arg("audio"), py::arg("sample_rate"), py::arg("options"), py::arg("on_done"), py::arg("on_error"),
          py::arg("on_segment") = py::none(), py::arg("priority") = 0,
          "Queues a transcription; on_done(dict) or on_error(exception) is called once, on the engine thread.")
      .def("abort", &Engine::abort, py::arg("id"), py::call_guard<py::gil_scoped_release>())
      .def("shutdown", &Engine::shutdown, py::arg("cancel") = false, py::call_guard<py::gil_scoped_release>())
      .def("stats", [](const Engine& self) { return stats_dict(self.stats()); });
  // Before the interpreter finalizes, engines still being destroyed must be gone (their threads
  // may call back into Python); speechcore.api shuts down the live ones first (its own atexit
  // handler, registered later, runs earlier).
  m.def("_wait_for_engine_helpers", &wait_for_helpers,
        "Waits until the engines released on their own threads are destroyed (called at exit).");
  py::module_::import("atexit").attr("register")(m.attr("_wait_for_engine_helpers"));
}

}  // namespace speechcore::bindings
