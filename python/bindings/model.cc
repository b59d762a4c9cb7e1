// speechcore::Model for Python: options in (a dict), plain dicts out, GIL released while
// the C++ side works, audio passed without copies.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>
#include <string>
#include <vector>

#include "bindings.h"
#include "core/status.h"
#include "speechcore/engine.h"

namespace py = pybind11;

namespace speechcore::bindings {

namespace {

template <typename T>
T cast_option(const py::handle& value, const std::string& key, const char* want) {
  try {
    return value.cast<T>();
  } catch (const py::cast_error&) {
    throw_error(ErrorCode::kInvalidArgument, "option '", key, "' must be ", want, ", got ",
                std::string(py::str(py::type::of(value).attr("__name__"))));
  }
}

}  // namespace

TranscribeOptions parse_transcribe_options(const py::dict& d) {
  TranscribeOptions o;
  for (const auto& item : d) {
    const std::string key = py::str(item.first);
    const py::handle v = item.second;
    if (v.is_none()) continue;  // None = default
    if (key == "language") o.language = cast_option<std::string>(v, key, "a string");
    else if (key == "task") o.task = cast_option<std::string>(v, key, "a string");
    else if (key == "beam_size") o.beam_size = cast_option<int>(v, key, "an integer");
    else if (key == "temperature") {
      if (py::isinstance<py::sequence>(v)) o.temperature = cast_option<std::vector<float>>(v, key, "a number or a list of numbers");
      else o.temperature = {cast_option<float>(v, key, "a number or a list of numbers")};
    }
    else if (key == "best_of") o.best_of = cast_option<int>(v, key, "an integer");
    else if (key == "patience") o.patience = cast_option<float>(v, key, "a number");
    else if (key == "length_penalty") o.length_penalty = cast_option<float>(v, key, "a number");
    else if (key == "repetition_penalty") o.repetition_penalty = cast_option<float>(v, key, "a number");
    else if (key == "no_repeat_ngram_size") o.no_repeat_ngram_size = cast_option<int>(v, key, "an integer");
    else if (key == "seed") o.seed = cast_option<uint64_t>(v, key, "an integer >= 0");
    else if (key == "condition_on_previous_text") o.condition_on_previous_text = cast_option<bool>(v, key, "a bool");
    else if (key == "without_timestamps") o.without_timestamps = cast_option<bool>(v, key, "a bool");
    else if (key == "multilingual") o.multilingual = cast_option<bool>(v, key, "a bool");
    else if (key == "chunk_length") o.chunk_length = cast_option<int>(v, key, "an integer");
    else if (key == "max_initial_timestamp") o.max_initial_timestamp = cast_option<float>(v, key, "a number");
    else if (key == "suppress_blank") o.suppress_blank = cast_option<bool>(v, key, "a bool");
    else if (key == "suppress_tokens") o.suppress_tokens = cast_option<std::vector<int>>(v, key, "a list of ints");
    else if (key == "initial_prompt") o.initial_prompt = cast_option<std::string>(v, key, "a string");
    // language detection and prompts
    else if (key == "language_detection_segments") o.language_detection_segments = cast_option<int>(v, key, "an integer");
    else if (key == "language_detection_threshold") o.language_detection_threshold = cast_option<float>(v, key, "a number");
    else if (key == "prefix") o.prefix = cast_option<std::string>(v, key, "a string");
    else if (key == "hotwords") o.hotwords = cast_option<std::string>(v, key, "a string");
    else if (key == "clip_timestamps") o.clip_timestamps = cast_option<std::vector<double>>(v, key, "a list of numbers");
    else if (key == "max_new_tokens") o.max_new_tokens = cast_option<int>(v, key, "an integer");
    else if (key == "compression_ratio_threshold") o.compression_ratio_threshold = cast_option<float>(v, key, "a number");
    else if (key == "log_prob_threshold") o.log_prob_threshold = cast_option<float>(v, key, "a number");
    else if (key == "no_speech_threshold") o.no_speech_threshold = cast_option<float>(v, key, "a number");
    else if (key == "prompt_reset_on_temperature") o.prompt_reset_on_temperature = cast_option<float>(v, key, "a number");
    // word-level timestamps
    else if (key == "word_timestamps") o.word_timestamps = cast_option<bool>(v, key, "a bool");
    else if (key == "prepend_punctuations") o.prepend_punctuations = cast_option<std::string>(v, key, "a string");
    else if (key == "append_punctuations") o.append_punctuations = cast_option<std::string>(v, key, "a string");
    else if (key == "hallucination_silence_threshold")
      o.hallucination_silence_threshold = cast_option<float>(v, key, "a number");
    // voice activity detection
    else if (key == "vad_filter") o.vad_filter = cast_option<bool>(v, key, "a bool");
    else if (key == "chunked") o.chunked = cast_option<bool>(v, key, "a bool");
    else if (key == "vad_parameters") {
      if (!py::isinstance<py::dict>(v))
        throw_error(ErrorCode::kInvalidArgument, "option 'vad_parameters' must be a dict of VAD options, got ",
                    std::string(py::str(py::type::of(v).attr("__name__"))));
      o.vad_parameters = parse_vad_options(py::reinterpret_borrow<py::dict>(v));
    }
    else if (key == "vad_model_path") o.vad_model_path = cast_option<std::string>(v, key, "a string");
    else throw_error(ErrorCode::kInvalidArgument, "unknown transcribe option '", key, "'");
  }
  return o;
}

py::dict segment_dict(const Segment& s) {
  py::dict d;
  d["id"] = s.id;
  d["seek"] = s.seek;
  d["start"] = s.start;
  d["end"] = s.end;
  d["text"] = s.text;
  d["tokens"] = s.tokens;
  d["avg_logprob"] = s.avg_logprob;
  d["compression_ratio"] = s.compression_ratio;
  d["no_speech_prob"] = s.no_speech_prob;
  d["temperature"] = s.temperature;
  py::list words;  // word_timestamps only
  for (const Word& w : s.words) {
    py::dict wd;
    wd["start"] = w.start;
    wd["end"] = w.end;
    wd["word"] = w.word;
    wd["probability"] = w.probability;
    words.append(wd);
  }
  d["words"] = words;
  return d;
}

py::dict transcription_dict(const Transcription& t) {
  py::list segments;
  for (const Segment& s : t.segments) segments.append(segment_dict(s));
  py::dict out;
  out["text"] = t.text;
  out["language"] = t.language;
  out["language_probability"] = t.language_probability;
  out["all_language_probs"] = t.all_language_probs;  // list of (code, probability)
  out["duration"] = t.duration;
  out["segments"] = segments;
  return out;
}

// The frames and channels of a float32 C-contiguous (frames,) or (frames, channels) array;
// `what` names the argument in errors.
AudioRef audio_ref(const py::handle& obj, int sample_rate, const std::string& what) {
  if (!py::isinstance<py::array_t<float>>(obj))
    throw_error(ErrorCode::kInvalidArgument, what, " must be a C-contiguous float32 numpy array");
  const py::array audio = py::reinterpret_borrow<py::array>(obj);
  if (!(audio.flags() & py::array::c_style))
    throw_error(ErrorCode::kInvalidArgument, what, " must be a C-contiguous float32 numpy array");
  if (audio.ndim() != 1 && audio.ndim() != 2)
    throw_error(ErrorCode::kInvalidArgument, what, " must have shape (frames,) or (frames, channels), got ",
                audio.ndim(), " dimensions");
  AudioRef r;
  r.pcm = static_cast<const float*>(audio.data());
  r.num_frames = static_cast<size_t>(audio.shape(0));
  r.channels = audio.ndim() == 2 ? static_cast<int>(audio.shape(1)) : 1;
  r.sample_rate = sample_rate;
  return r;
}

namespace {

// The arrays of a batch call as AudioRefs, with references held while the GIL is released
// (the list may change meanwhile).
struct BatchAudio {
  std::vector<py::object> keep;
  std::vector<AudioRef> refs;
  BatchAudio(const py::list& audios, const std::vector<int>& sample_rates) {
    if (sample_rates.size() != audios.size())
      throw_error(ErrorCode::kInvalidArgument, "sample_rates has ", sample_rates.size(), " entries for ",
                  audios.size(), " audio arrays");
    keep.reserve(audios.size());
    refs.reserve(audios.size());
    for (size_t i = 0; i < audios.size(); ++i) {
      keep.push_back(py::reinterpret_borrow<py::object>(audios[i]));
      refs.push_back(audio_ref(keep.back(), sample_rates[i], "audio item " + std::to_string(i)));
    }
  }
};

py::list transcription_list(const std::vector<Transcription>& ts) {
  py::list out;
  for (const Transcription& t : ts) out.append(transcription_dict(t));
  return out;
}

py::dict info_dict(const ModelInfo& i) {
  py::dict d;
  d["architecture"] = i.architecture;
  d["format"] = i.format;
  d["path"] = i.path;
  d["multilingual"] = i.multilingual;
  d["n_mels"] = i.n_mels;
  d["d_model"] = i.d_model;
  d["encoder_layers"] = i.encoder_layers;
  d["decoder_layers"] = i.decoder_layers;
  d["vocab_size"] = i.vocab_size;
  d["device"] = i.device;
  d["compute_type"] = i.compute_type;
  d["weight_bytes"] = i.weight_bytes;
  d["decoder_step"] = i.decoder_step;
  d["cross_absorb_min_windows"] = i.cross_absorb_min_windows;
  return d;
}

}  // namespace

void register_model(py::module_& m) {
  py::class_<Model, std::shared_ptr<Model>>(m, "Model")
      .def(py::init([](const std::string& path, const std::string& device, const std::string& compute_type,
                       int threads) {
             LoadOptions o;
             o.device = device;
             o.compute_type = compute_type;
             o.threads = threads;
             py::gil_scoped_release release;
             return Model::load(path, o);
           }),
           py::arg("path"), py::arg("device") = "auto", py::arg("compute_type") = "auto", py::arg("threads") = 0)
      .def_property_readonly("info", [](const Model& self) { return info_dict(self.info()); })
      .def(
          "transcribe",
          [](const Model& self, const py::array& audio, int sample_rate, const py::dict& options,
             const py::object& progress) {
            const AudioRef a = audio_ref(audio, sample_rate, "audio");
            const TranscribeOptions opts = parse_transcribe_options(options);
            // progress(done_seconds, total_seconds) with the GIL; an exception it raises (e.g.
            // KeyboardInterrupt) stops the transcription and is raised again here.
            std::unique_ptr<py::error_already_set> raised;
            Model::Progress report;
            if (!progress.is_none())
              report = [&](double done, double total) {
                py::gil_scoped_acquire gil;
                try {
                  progress(done, total);
                } catch (py::error_already_set& e) {
                  raised = std::make_unique<py::error_already_set>(std::move(e));
                  throw Error(ErrorCode::kCancelled, "the progress callback raised an exception");
                }
              };
            Transcription t;
            try {
              py::gil_scoped_release release;
              t = self.transcribe(a.pcm, a.num_frames, a.sample_rate, a.channels, opts, report);
            } catch (const Error&) {
              if (raised) throw *raised;
              throw;
            }
            return transcription_dict(t);
          },
          py::arg("audio"), py::arg("sample_rate"), py::arg("options") = py::dict(), py::arg("progress") = py::none())
      .def(
          "transcribe_batch",
          [](const Model& self, const py::list& audios, const std::vector<int>& sample_rates,
             const py::dict& options, int max_batch) {
            BatchAudio batch(audios, sample_rates);
            const TranscribeOptions opts = parse_transcribe_options(options);
            std::vector<Transcription> ts;
            {
              py::gil_scoped_release release;
              ts = self.transcribe_batch(batch.refs, opts, max_batch);
            }
            return transcription_list(ts);
          },
          py::arg("audios"), py::arg("sample_rates"), py::arg("options") = py::dict(), py::arg("max_batch") = 64,
          "Transcribes many float32 arrays (each (frames,) or (frames, channels)) with one set of options on a "
          "temporary engine decoding up to max_batch windows together. Returns one dict per array, in order.")
      .def(
          "transcribe_batch_on_engine",
          [](const Model& self, Engine& engine, const py::list& audios, const std::vector<int>& sample_rates,
             const py::dict& options, int max_in_flight, int priority) {
            BatchAudio batch(audios, sample_rates);
            const TranscribeOptions opts = parse_transcribe_options(options);
            std::vector<Transcription> ts;
            {
              py::gil_scoped_release release;
              ts = self.transcribe_batch(engine, batch.refs, opts, max_in_flight, priority);
            }
            return transcription_list(ts);
          },
          py::arg("engine"), py::arg("audios"), py::arg("sample_rates"), py::arg("options") = py::dict(),
          py::arg("max_in_flight") = 0, py::arg("priority") = 0,
          "Model::transcribe_batch(engine, ...): the arrays through a running engine of this model (shared with "
          "other submitters), at most max_in_flight at once (0 = all). Returns one dict per array, in order.")
      .def(
          "detect_language",
          [](const Model& self, const py::array& audio, int sample_rate, int segments, float threshold) {
            const AudioRef a = audio_ref(audio, sample_rate, "audio");
            LanguageDetection d;
            {
              py::gil_scoped_release release;
              d = self.detect_language(a.pcm, a.num_frames, a.sample_rate, a.channels, segments, threshold);
            }
            return py::make_tuple(d.language, d.probability, d.all_language_probs);
          },
          py::arg("audio"), py::arg("sample_rate"), py::arg("segments") = 1, py::arg("threshold") = 0.5f,
          "Model::detect_language: (language, probability, [(language, probability), ...] most likely first).")
      .def(
          "check_options",
          [](const Model& self, const py::dict& options) { self.check_options(parse_transcribe_options(options)); },
          py::arg("options"), "Raises the error transcribe() would raise for these options; None when usable.")
      .def(
          "prompt_logits",
          [](const Model& self, py::array_t<float, py::array::c_style | py::array::forcecast> mel,
             const std::vector<int>& prompt) {
            const ModelInfo& info = self.info();
            if (mel.ndim() != 2 || mel.shape(0) != info.n_mels || mel.shape(1) != 3000)
              throw_error(ErrorCode::kInvalidArgument, "mel must have shape (", info.n_mels, ", 3000)");
            for (int t : prompt)
              if (t < 0 || t >= info.vocab_size) throw_error(ErrorCode::kInvalidArgument, "token ", t, " out of range");
            std::vector<float> out;
            {
              py::gil_scoped_release release;
              out = self.prompt_logits(mel.data(), prompt);
            }
            return py::array_t<float>(static_cast<py::ssize_t>(out.size()), out.data());
          },
          py::arg("mel"), py::arg("prompt"), "Raw logits after `prompt` for one window of features (diagnostics).")
      .def("encoder_passes", &Model::encoder_passes,
           "30 s windows encoded by this model so far (diagnostics: a temperature fallback reuses the window's "
           "encoder output on the CPU).");
}

}  // namespace speechcore::bindings
