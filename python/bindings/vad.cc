// speechcore::vad for Python (submodule _C.vad): the Silero VAD network, the speech-timestamp
// algorithm, collect_chunks and SpeechTimestampsMap. speechcore/vad.py wraps these.
// Audio comes in as float32 1-D arrays (other float dtypes converted once, integer PCM refused),
// the GIL is released while the network runs.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "bindings.h"
#include "core/status.h"
#include "speechcore/vad.h"

namespace py = pybind11;

namespace speechcore::bindings {

namespace {

using FloatArray = py::array_t<float, py::array::c_style | py::array::forcecast>;

FloatArray audio_1d(const py::handle& obj, const char* what) {
  py::array arr = py::array::ensure(obj);
  if (!arr) throw_error(ErrorCode::kInvalidArgument, what, ": expected a numpy array");
  if (arr.dtype().kind() != 'f') {
    throw_error(ErrorCode::kInvalidArgument, what, ": expected a floating-point array, got dtype ",
                std::string(py::str(arr.dtype())));
  }
  if (arr.ndim() != 1) {
    throw_error(ErrorCode::kInvalidArgument, what, ": expected a 1-D array, got ", arr.ndim(),
                " dimensions");
  }
  return FloatArray::ensure(arr);
}

py::array_t<float> to_array(std::vector<float>&& v) {
  auto* holder = new std::vector<float>(std::move(v));
  py::capsule owner(holder, [](void* p) { delete static_cast<std::vector<float>*>(p); });
  return py::array_t<float>({static_cast<py::ssize_t>(holder->size())}, holder->data(), owner);
}

template <typename T>
T cast_vad_option(const py::handle& value, const std::string& key, const char* want) {
  try {
    return value.cast<T>();
  } catch (const py::cast_error&) {
    throw_error(ErrorCode::kInvalidArgument, "VAD option '", key, "' must be ", want, ", got ",
                std::string(py::str(py::type::of(value).attr("__name__"))));
  }
}

}  // namespace

// Declared in bindings.h (model.cc parses the vad_parameters transcribe option with it).
vad::VadOptions parse_vad_options(const py::dict& d) {
  vad::VadOptions o;
  for (const auto& item : d) {
    const std::string key = py::str(item.first);
    const py::handle v = item.second;
    if (key == "neg_threshold") {
      if (v.is_none()) o.neg_threshold.reset();
      else o.neg_threshold = cast_vad_option<double>(v, key, "a number or None");
      continue;
    }
    if (v.is_none()) {
      throw_error(ErrorCode::kInvalidArgument, "VAD option '", key, "' must not be None");
    }
    if (key == "threshold") o.threshold = cast_vad_option<double>(v, key, "a number");
    else if (key == "min_speech_duration_ms") o.min_speech_duration_ms = cast_vad_option<double>(v, key, "a number");
    else if (key == "max_speech_duration_s") o.max_speech_duration_s = cast_vad_option<double>(v, key, "a number");
    else if (key == "min_silence_duration_ms") o.min_silence_duration_ms = cast_vad_option<double>(v, key, "a number");
    else if (key == "speech_pad_ms") o.speech_pad_ms = cast_vad_option<double>(v, key, "a number");
    else if (key == "min_silence_at_max_speech") o.min_silence_at_max_speech = cast_vad_option<double>(v, key, "a number");
    else if (key == "use_max_poss_sil_at_max_speech") o.use_max_poss_sil_at_max_speech = cast_vad_option<bool>(v, key, "a bool");
    else throw_error(ErrorCode::kInvalidArgument, "unknown VAD option '", key, "'");
  }
  o.validate();
  return o;
}

namespace {

py::dict options_dict(const vad::VadOptions& o) {
  py::dict d;
  d["threshold"] = o.threshold;
  d["neg_threshold"] = o.neg_threshold ? py::cast(*o.neg_threshold) : py::none();
  d["min_speech_duration_ms"] = o.min_speech_duration_ms;
  d["max_speech_duration_s"] = o.max_speech_duration_s;
  d["min_silence_duration_ms"] = o.min_silence_duration_ms;
  d["speech_pad_ms"] = o.speech_pad_ms;
  d["min_silence_at_max_speech"] = o.min_silence_at_max_speech;
  d["use_max_poss_sil_at_max_speech"] = o.use_max_poss_sil_at_max_speech;
  return d;
}

py::list timestamps_list(const std::vector<vad::SpeechTimestamp>& ts) {
  py::list out;
  for (const auto& t : ts) out.append(py::make_tuple(t.start, t.end));
  return out;
}

std::vector<vad::SpeechTimestamp> parse_chunks(const py::handle& obj) {
  std::vector<vad::SpeechTimestamp> out;
  for (const py::handle item : obj) {
    const auto pair = item.cast<std::pair<int64_t, int64_t>>();
    out.push_back({pair.first, pair.second});
  }
  return out;
}

}  // namespace

void register_vad(py::module_& parent) {
  py::module_ m = parent.def_submodule("vad", "Silero VAD run by speechcore (see speechcore.vad)");
  m.attr("SAMPLE_RATE") = vad::kSampleRate;
  m.attr("WINDOW_SAMPLES") = vad::kWindowSamples;
  m.attr("CONTEXT_SAMPLES") = vad::kContextSamples;

  m.def("default_options", [] { return options_dict(vad::VadOptions()); },
        "The C++ VadOptions defaults as a dict.");
  m.def("check_options", [](const py::dict& d) { return options_dict(parse_vad_options(d)); },
        py::arg("options"), "Parses and validates a VAD option dict; returns the complete dict.");

  py::class_<vad::SileroVad::State>(m, "State", "Streaming state: LSTM (h, c) and the last 64 samples.")
      .def(py::init<>())
      .def("reset", &vad::SileroVad::State::reset);

  py::class_<vad::SileroVad, std::shared_ptr<vad::SileroVad>>(m, "SileroVad")
      .def(py::init([](const py::object& path) {
             const std::string p = py::str(py::module_::import("os").attr("fspath")(path));
             py::gil_scoped_release release;
             return vad::SileroVad::load(p);
           }),
           py::arg("path"), "Loads silero_vad_16k.safetensors (or a file with its tensors).")
      .def_property_readonly("path", &vad::SileroVad::path)
      .def(
          "speech_probs",
          [](const vad::SileroVad& self, const py::object& audio) {
            FloatArray x = audio_1d(audio, "speech_probs");
            std::vector<float> p;
            {
              py::gil_scoped_release release;
              p = self.speech_probs(x.data(), static_cast<size_t>(x.size()));
            }
            return to_array(std::move(p));
          },
          py::arg("audio"), "Speech probability of each 512-sample window of 16 kHz audio.")
      .def(
          "process",
          [](const vad::SileroVad& self, vad::SileroVad::State& state, const py::object& audio) {
            FloatArray x = audio_1d(audio, "process");
            const auto n = static_cast<size_t>(x.size());
            if (n % vad::kWindowSamples != 0) {
              throw_error(ErrorCode::kInvalidArgument, "process: ", n,
                          " samples is not a whole number of ", vad::kWindowSamples,
                          "-sample windows");
            }
            std::vector<float> p(n / vad::kWindowSamples);
            {
              py::gil_scoped_release release;
              self.process(state, x.data(), p.size(), p.data());
            }
            return to_array(std::move(p));
          },
          py::arg("state"), py::arg("audio"),
          "Probabilities of whole 512-sample windows, continuing from `state` (updated).")
      .def(
          "speech_timestamps",
          [](const vad::SileroVad& self, const py::object& audio, int sample_rate,
             const py::dict& options) {
            FloatArray x = audio_1d(audio, "speech_timestamps");
            const vad::VadOptions o = parse_vad_options(options);
            std::vector<vad::SpeechTimestamp> ts;
            {
              py::gil_scoped_release release;
              ts = vad::get_speech_timestamps(self, x.data(), static_cast<size_t>(x.size()),
                                              sample_rate, o);
            }
            return timestamps_list(ts);
          },
          py::arg("audio"), py::arg("sample_rate"), py::arg("options"),
          "Speech chunks [(start, end), ...] in samples of 16 kHz audio.");

  m.def(
      "speech_timestamps_from_probs",
      [](const py::object& probs, int64_t audio_length_samples, const py::dict& options) {
        FloatArray p = audio_1d(probs, "speech_timestamps_from_probs");
        const vad::VadOptions o = parse_vad_options(options);
        return timestamps_list(vad::speech_timestamps_from_probs(
            p.data(), static_cast<size_t>(p.size()), audio_length_samples, o));
      },
      py::arg("probs"), py::arg("audio_length_samples"), py::arg("options"));

  m.def(
      "collect_chunks",
      [](const py::object& audio, const py::object& chunks, double max_duration, int sample_rate) {
        FloatArray x = audio_1d(audio, "collect_chunks");
        const std::vector<vad::SpeechTimestamp> c = parse_chunks(chunks);
        std::vector<vad::ChunkGroup> groups;
        {
          py::gil_scoped_release release;
          groups = vad::collect_chunks(x.data(), static_cast<size_t>(x.size()), c, max_duration,
                                       sample_rate);
        }
        py::list out;
        for (auto& g : groups) {
          out.append(py::make_tuple(to_array(std::move(g.audio)), g.offset, g.duration,
                                    timestamps_list(g.segments)));
        }
        return out;
      },
      py::arg("audio"), py::arg("chunks"), py::arg("max_duration"), py::arg("sample_rate"),
      "[(audio, offset_s, duration_s, [(start, end), ...]), ...]");

  py::class_<vad::SpeechTimestampsMap>(m, "SpeechTimestampsMap")
      .def(py::init([](const py::object& chunks, int sample_rate, int time_precision) {
             return vad::SpeechTimestampsMap(parse_chunks(chunks), sample_rate, time_precision);
           }),
           py::arg("chunks"), py::arg("sample_rate"), py::arg("time_precision"))
      .def("original_time", &vad::SpeechTimestampsMap::original_time, py::arg("time"),
           py::arg("chunk_index") = -1, py::arg("is_end") = false)
      .def("chunk_index", &vad::SpeechTimestampsMap::chunk_index, py::arg("time"),
           py::arg("is_end") = false)
      .def_property_readonly("num_chunks", &vad::SpeechTimestampsMap::num_chunks);
}

}  // namespace speechcore::bindings
