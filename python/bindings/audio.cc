// Audio frontend bindings: log-mel, resampling, prepare_audio, read_wav, mel filters.
// Arrays come in as float32 (converted from other float dtypes once), results go out as
// numpy arrays that own the C++ buffers (no copy); the GIL is released around the work.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <memory>
#include <string>
#include <vector>

#include "bindings.h"
#include "core/status.h"
#include "core/thread_pool.h"
#include "io/audio.h"
#include "speechcore/audio.h"
#include "speechcore/tensor.h"

namespace py = pybind11;

namespace speechcore::bindings {

namespace {

using FloatArray = py::array_t<float, py::array::c_style | py::array::forcecast>;

// A C-contiguous float32 view of `obj` (a copy only when the dtype or layout differ).
// Rejects non-float inputs so that unscaled integer PCM is not silently taken as audio.
FloatArray as_float_array(const py::handle& obj, const char* what, int min_ndim, int max_ndim) {
  py::array arr = py::array::ensure(obj);
  if (!arr) throw_error(ErrorCode::kInvalidArgument, what, ": expected a numpy array");
  if (arr.dtype().kind() != 'f') {
    throw_error(ErrorCode::kInvalidArgument, what, ": expected a floating-point array, got dtype ",
                std::string(py::str(arr.dtype())));
  }
  if (arr.ndim() < min_ndim || arr.ndim() > max_ndim) {
    throw_error(ErrorCode::kInvalidArgument, what, ": expected an array with ",
                min_ndim == max_ndim ? std::to_string(min_ndim)
                                     : std::to_string(min_ndim) + " or " + std::to_string(max_ndim),
                " dimension(s), got ", arr.ndim());
  }
  return FloatArray::ensure(arr);
}

py::array_t<float> vector_to_array(std::vector<float>&& v, std::vector<py::ssize_t> shape) {
  auto* holder = new std::vector<float>(std::move(v));
  py::capsule owner(holder, [](void* p) { delete static_cast<std::vector<float>*>(p); });
  return py::array_t<float>(shape, holder->data(), owner);
}

py::array_t<float> tensor_to_array(Tensor&& t) {
  auto* holder = new Tensor(std::move(t));
  py::capsule owner(holder, [](void* p) { delete static_cast<Tensor*>(p); });
  std::vector<py::ssize_t> shape(holder->shape().begin(), holder->shape().end());
  return py::array_t<float>(shape, holder->data<float>(), owner);
}

}  // namespace

void register_audio(py::module_& m) {
  m.def(
      "log_mel_spectrogram",
      [](const py::object& audio, int n_mels, int padding, int n_fft, int hop_length,
         int sample_rate, int num_threads) {
        FloatArray x = as_float_array(audio, "log_mel_spectrogram", 1, 1);
        io::MelOptions options;
        options.n_mels = n_mels;
        options.padding = padding;
        options.n_fft = n_fft;
        options.hop_length = hop_length;
        options.sample_rate = sample_rate;
        Tensor out;
        {
          py::gil_scoped_release release;
          std::unique_ptr<core::ThreadPool> pool;
          if (num_threads != 1) pool = std::make_unique<core::ThreadPool>(num_threads);
          out = io::log_mel_spectrogram(x.data(), static_cast<size_t>(x.size()), options,
                                        pool.get());
        }
        return tensor_to_array(std::move(out));
      },
      py::arg("audio"), py::arg("n_mels") = 80, py::arg("padding") = 160, py::arg("n_fft") = 400,
      py::arg("hop_length") = 160, py::arg("sample_rate") = 16000, py::arg("num_threads") = 1,
      "Whisper log-mel spectrogram of mono 16 kHz float audio, [n_mels, frames] float32\n"
      "(faster-whisper's FeatureExtractor numerics). num_threads: 1 = this thread only,\n"
      "0 = all hardware threads.");

  m.def(
      "mel_filters",
      [](int sample_rate, int n_fft, int n_mels) {
        std::vector<float> w = io::mel_filters(sample_rate, n_fft, n_mels);
        return vector_to_array(std::move(w), {n_mels, n_fft / 2 + 1});
      },
      py::arg("sample_rate"), py::arg("n_fft"), py::arg("n_mels"),
      "Slaney mel filterbank as faster-whisper builds it, [n_mels, n_fft // 2 + 1] float32.");

  m.def(
      "resample",
      [](const py::object& audio, int from_rate, int to_rate) {
        FloatArray x = as_float_array(audio, "resample", 1, 1);
        std::vector<float> y;
        {
          py::gil_scoped_release release;
          y = io::resample(x.data(), static_cast<size_t>(x.size()), from_rate, to_rate);
        }
        const auto n = static_cast<py::ssize_t>(y.size());
        return vector_to_array(std::move(y), {n});
      },
      py::arg("audio"), py::arg("from_rate"), py::arg("to_rate"),
      "Band-limited (Kaiser windowed-sinc) resampling of 1-D float audio.");

  m.def(
      "to_mono",
      [](const py::object& audio) {
        FloatArray x = as_float_array(audio, "to_mono", 2, 2);
        const size_t frames = static_cast<size_t>(x.shape(0));
        const int channels = static_cast<int>(x.shape(1));
        std::vector<float> y;
        {
          py::gil_scoped_release release;
          y = io::to_mono(x.data(), frames, channels);
        }
        return vector_to_array(std::move(y), {static_cast<py::ssize_t>(frames)});
      },
      py::arg("audio"), "Average of the channels of (frames, channels) audio.");

  m.def(
      "validate_audio",
      [](const py::object& audio) {
        FloatArray x = as_float_array(audio, "validate_audio", 1, 2);
        py::gil_scoped_release release;
        io::validate_audio(x.data(), static_cast<size_t>(x.size()));
      },
      py::arg("audio"), "Raises AudioError if the audio holds NaN or infinite samples.");

  m.def(
      "prepare_audio",
      [](const py::object& audio, int sample_rate) {
        FloatArray x = as_float_array(audio, "prepare_audio", 1, 2);
        const size_t frames = static_cast<size_t>(x.shape(0));
        const int channels = x.ndim() == 2 ? static_cast<int>(x.shape(1)) : 1;
        std::vector<float> y;
        {
          py::gil_scoped_release release;
          y = io::prepare_audio(x.data(), frames, sample_rate, channels);
        }
        const auto n = static_cast<py::ssize_t>(y.size());
        return vector_to_array(std::move(y), {n});
      },
      py::arg("audio"), py::arg("sample_rate"),
      "Checks float audio of shape (frames,) or (frames, channels), mixes it to mono and\n"
      "resamples it to 16 kHz.");

  m.def(
      "read_wav",
      [](const py::object& path) {
        const std::string p = py::str(py::module_::import("os").attr("fspath")(path));
        AudioBuffer buffer;
        {
          py::gil_scoped_release release;
          buffer = read_wav(p);
        }
        const int rate = buffer.sample_rate;
        const auto channels = static_cast<py::ssize_t>(buffer.channels);
        const auto frames = static_cast<py::ssize_t>(buffer.num_frames());
        return py::make_tuple(vector_to_array(std::move(buffer.samples), {frames, channels}), rate);
      },
      py::arg("path"),
      "Reads a WAV file: returns (float32 array of shape (frames, channels), sample_rate).");
}

}  // namespace speechcore::bindings
