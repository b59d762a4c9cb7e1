// Silero VAD (v5/v6 16 kHz network) on the CPU.
//
// Per 512-sample window the network sees 576 samples (the previous window's last 64, then the
// window), reflect-padded on the right by 64 to 640:
//   STFT as a convolution: 258 basis rows of 256 taps, hop 128 -> 4 frames; magnitude of the
//     129 (real, imaginary) pairs -> [4, 129]
//   4 convolutions, kernel 3, padding 1, ReLU: 129->128 (stride 1), 128->64 (stride 2),
//     64->64 (stride 2), 64->128 (stride 1) -> [1, 128]
//   LSTM cell (128 -> 128, gates i, f, g, o) carrying (h, c) from window to window
//   decoder: ReLU, 1x1 convolution 128 -> 1, sigmoid -> the window's speech probability.
// Everything before the LSTM depends on the window's samples only, so a block of windows runs
// as batched matrix products (im2col + ops::linear, i.e. BLAS), including the LSTM's input
// projection; only the recurrent part (W_hh h, 512x128 per window) runs window by window.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "core/status.h"
#include "io/audio.h"
#include "io/checkpoint.h"
#include "ops/ops.h"
#include "speechcore/vad.h"

namespace speechcore::vad {

namespace {

constexpr int kFrameInput = kContextSamples + kWindowSamples;  // 576 samples per window
constexpr int kReflectPad = 64;                                // right reflect padding
constexpr int kPadded = kFrameInput + kReflectPad;              // 640
constexpr int kFftTaps = 256;                                  // STFT basis length
constexpr int kHop = 128;
constexpr int kBins = kFftTaps / 2 + 1;                        // 129
constexpr int kFrames = (kPadded - kFftTaps) / kHop + 1;       // 4
constexpr int kC1 = 128, kC2 = 64, kC3 = 64, kC4 = 128;
constexpr int kT2 = 2, kT3 = 1;                                // frames after the stride-2 convs
constexpr int kGates = 4 * kStateSize;                         // 512
constexpr size_t kBlockWindows = 256;                          // windows per batched encoder pass

inline float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }

#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
#define SC_VAD_CLONES __attribute__((target_clones("arch=haswell", "default")))
#else
#define SC_VAD_CLONES
#endif

// g[512] += W^T h, with W stored transposed as wt[k][512] so the inner loop is a plain
// vectorizable axpy over the 512 gate rows.
SC_VAD_CLONES void add_recurrent(const float* wt, const float* h, float* g) {
  for (int k = 0; k < kStateSize; ++k) {
    const float hk = h[k];
    const float* row = wt + static_cast<size_t>(k) * kGates;
    for (int r = 0; r < kGates; ++r) g[r] += row[r] * hk;
  }
}

}  // namespace

struct SileroVad::Weights {
  std::string path;
  std::vector<float> stft;      // [258, 256]
  std::vector<float> w1, b1;    // [128, 129*3], [128]
  std::vector<float> w2, b2;    // [64, 128*3]
  std::vector<float> w3, b3;    // [64, 64*3]
  std::vector<float> w4c, b4;   // centre tap of conv4: [128, 64] (its input has one frame)
  std::vector<float> w_ih;      // [512, 128]
  std::vector<float> bias;      // b_ih + b_hh [512]
  std::vector<float> w_hh_t;    // W_hh transposed [128, 512]
  std::vector<float> w_out;     // [128]
  float b_out = 0;
};

void SileroVad::State::reset() {
  std::fill(std::begin(h), std::end(h), 0.0f);
  std::fill(std::begin(c), std::end(c), 0.0f);
  std::fill(std::begin(context), std::end(context), 0.0f);
}

namespace {

std::vector<float> read_tensor(const io::CheckpointReader& r, const std::string& name,
                               const Shape& shape) {
  const io::TensorInfo& info = r.info(name);  // kInvalidModel naming the file if absent
  if (info.shape != shape) {
    throw_error(ErrorCode::kInvalidModel, r.path(), ": weight '", name, "' has shape ",
                shape_str(info.shape), ", expected ", shape_str(shape),
                " (not a Silero VAD v5/v6 16 kHz checkpoint?)");
  }
  Tensor t = r.get_float32(name);
  const float* p = t.data<float>();
  std::vector<float> out(p, p + t.numel());
  for (float v : out) {
    if (!std::isfinite(v)) {
      throw_error(ErrorCode::kInvalidModel, r.path(), ": weight '", name,
                  "' holds NaN or infinite values");
    }
  }
  return out;
}

}  // namespace

std::shared_ptr<SileroVad> SileroVad::load(const std::string& safetensors_path) {
  std::unique_ptr<io::CheckpointReader> r = io::open_safetensors(safetensors_path);
  // The library runs OpenBLAS single-threaded (as Model::load does): the VAD's products are
  // small, and BLAS threads spinning on them cost several times the work itself.
  ops::set_blas_threads(1);
  auto w = std::make_unique<Weights>();
  w->path = safetensors_path;
  w->stft = read_tensor(*r, "stft_conv.weight", {2 * kBins, 1, kFftTaps});
  w->w1 = read_tensor(*r, "conv1.weight", {kC1, kBins, 3});
  w->b1 = read_tensor(*r, "conv1.bias", {kC1});
  w->w2 = read_tensor(*r, "conv2.weight", {kC2, kC1, 3});
  w->b2 = read_tensor(*r, "conv2.bias", {kC2});
  w->w3 = read_tensor(*r, "conv3.weight", {kC3, kC2, 3});
  w->b3 = read_tensor(*r, "conv3.bias", {kC3});
  const std::vector<float> w4 = read_tensor(*r, "conv4.weight", {kC4, kC3, 3});
  w->b4 = read_tensor(*r, "conv4.bias", {kC4});
  w->w4c.resize(static_cast<size_t>(kC4) * kC3);
  for (int o = 0; o < kC4; ++o)
    for (int i = 0; i < kC3; ++i) w->w4c[o * kC3 + i] = w4[(o * kC3 + i) * 3 + 1];
  w->w_ih = read_tensor(*r, "lstm_cell.weight_ih", {kGates, kC4});
  const std::vector<float> w_hh = read_tensor(*r, "lstm_cell.weight_hh", {kGates, kStateSize});
  const std::vector<float> b_ih = read_tensor(*r, "lstm_cell.bias_ih", {kGates});
  const std::vector<float> b_hh = read_tensor(*r, "lstm_cell.bias_hh", {kGates});
  w->bias.resize(kGates);
  for (int g = 0; g < kGates; ++g) w->bias[g] = b_ih[g] + b_hh[g];
  w->w_hh_t.resize(static_cast<size_t>(kStateSize) * kGates);
  for (int g = 0; g < kGates; ++g)
    for (int k = 0; k < kStateSize; ++k) w->w_hh_t[k * kGates + g] = w_hh[g * kStateSize + k];
  w->w_out = read_tensor(*r, "final_conv.weight", {1, kStateSize, 1});
  w->b_out = read_tensor(*r, "final_conv.bias", {1})[0];
  return std::shared_ptr<SileroVad>(new SileroVad(std::move(w)));
}

SileroVad::SileroVad(std::unique_ptr<Weights> weights) : w_(std::move(weights)) {}
SileroVad::~SileroVad() = default;

const std::string& SileroVad::path() const { return w_->path; }

void SileroVad::process(State& state, const float* audio, size_t num_windows, float* probs) const {
  if (num_windows == 0) return;
  SC_CHECK(audio != nullptr && probs != nullptr, ErrorCode::kInvalidArgument,
           "SileroVad::process: null audio or output pointer");
  io::validate_audio(audio, num_windows * kWindowSamples);  // kInvalidAudio for NaN/inf
  const Weights& w = *w_;
  const ops::Context ctx{};  // single-threaded: the products are small, the LSTM sequential
  const size_t block = std::min(num_windows, kBlockWindows);
  std::vector<float> cols(block * kFrames * kBins * 3);      // the largest im2col (conv1)
  std::vector<float> spec(block * kFrames * 2 * kBins);      // STFT output
  std::vector<float> mag(block * kFrames * kBins);
  std::vector<float> x1(block * kFrames * kC1), x2(block * kT2 * kC2), x3(block * kT3 * kC3);
  std::vector<float> x4(block * kC4), gates(block * kGates);
  float padded[kPadded];

  for (size_t w0 = 0; w0 < num_windows; w0 += block) {
    const size_t nb = std::min(block, num_windows - w0);
    const int64_t m = static_cast<int64_t>(nb);
    // STFT frames: context + window, reflect-padded, cut into 4 frames of 256 (hop 128).
    for (size_t b = 0; b < nb; ++b) {
      const float* win = audio + (w0 + b) * kWindowSamples;
      const float* ctx_src = b == 0 ? state.context : win - kContextSamples;
      std::memcpy(padded, ctx_src, sizeof(float) * kContextSamples);
      std::memcpy(padded + kContextSamples, win, sizeof(float) * kWindowSamples);
      for (int j = 1; j <= kReflectPad; ++j) padded[kFrameInput - 1 + j] = padded[kFrameInput - 1 - j];
      for (int f = 0; f < kFrames; ++f)
        std::memcpy(&cols[(b * kFrames + f) * kFftTaps], padded + f * kHop, sizeof(float) * kFftTaps);
    }
    ops::linear(ctx, cols.data(), w.stft.data(), nullptr, spec.data(), m * kFrames, 2 * kBins, kFftTaps);
    for (size_t r = 0; r < nb * kFrames; ++r) {
      const float* s = &spec[r * 2 * kBins];
      float* out = &mag[r * kBins];
      for (int j = 0; j < kBins; ++j) out[j] = std::sqrt(s[j] * s[j] + s[kBins + j] * s[kBins + j]);
    }
    // A kernel-3, padding-1 convolution over each window's frames as im2col + GEMM + ReLU.
    // x: [nb, t_in, c_in] time-major; y: [nb, t_out, c_out].
    auto conv = [&](const float* x, int t_in, int c_in, int stride, const std::vector<float>& wt,
                    const std::vector<float>& bias, int c_out, float* y) {
      const int t_out = (t_in + 2 - 3) / stride + 1;
      const size_t row = static_cast<size_t>(c_in) * 3;
      for (size_t b = 0; b < nb; ++b) {
        for (int t = 0; t < t_out; ++t) {
          float* col = &cols[(b * t_out + t) * row];
          for (int k = 0; k < 3; ++k) {
            const int ti = t * stride + k - 1;
            const float* src = ti >= 0 && ti < t_in ? x + (b * t_in + ti) * c_in : nullptr;
            for (int c = 0; c < c_in; ++c) col[c * 3 + k] = src ? src[c] : 0.0f;
          }
        }
      }
      const int64_t rows = m * t_out;
      ops::linear(ctx, cols.data(), wt.data(), bias.data(), y, rows, c_out, static_cast<int64_t>(row));
      for (int64_t i = 0; i < rows * c_out; ++i) y[i] = std::max(y[i], 0.0f);
    };
    conv(mag.data(), kFrames, kBins, 1, w.w1, w.b1, kC1, x1.data());
    conv(x1.data(), kFrames, kC1, 2, w.w2, w.b2, kC2, x2.data());
    conv(x2.data(), kT2, kC2, 2, w.w3, w.b3, kC3, x3.data());
    // conv4 sees one frame: only its centre tap meets data (the others meet the zero padding).
    ops::linear(ctx, x3.data(), w.w4c.data(), w.b4.data(), x4.data(), m, kC4, kC3);
    for (int64_t i = 0; i < m * kC4; ++i) x4[i] = std::max(x4[i], 0.0f);
    // LSTM input projection for the whole block, then the recurrence window by window.
    ops::linear(ctx, x4.data(), w.w_ih.data(), w.bias.data(), gates.data(), m, kGates, kC4);
    for (size_t b = 0; b < nb; ++b) {
      float* g = &gates[b * kGates];
      add_recurrent(w.w_hh_t.data(), state.h, g);
      float logit = w.b_out;
      for (int k = 0; k < kStateSize; ++k) {
        const float ig = sigmoid(g[k]);
        const float fg = sigmoid(g[kStateSize + k]);
        const float gg = std::tanh(g[2 * kStateSize + k]);
        const float og = sigmoid(g[3 * kStateSize + k]);
        const float c = fg * state.c[k] + ig * gg;
        state.c[k] = c;
        state.h[k] = og * std::tanh(c);
      }
      for (int k = 0; k < kStateSize; ++k) logit += w.w_out[k] * std::max(state.h[k], 0.0f);
      probs[w0 + b] = sigmoid(logit);
    }
    std::memcpy(state.context, audio + (w0 + nb) * kWindowSamples - kContextSamples,
                sizeof(float) * kContextSamples);
  }
}

float SileroVad::process_window(State& state, const float* window) const {
  float p = 0;
  process(state, window, 1, &p);
  return p;
}

std::vector<float> SileroVad::speech_probs(const float* audio, size_t n) const {
  const size_t full = n / kWindowSamples;
  const size_t num_windows = (n + kWindowSamples - 1) / kWindowSamples;
  std::vector<float> probs(num_windows);
  if (num_windows == 0) return probs;
  SC_CHECK(audio != nullptr, ErrorCode::kInvalidArgument, "SileroVad::speech_probs: null audio");
  State state;
  process(state, audio, full, probs.data());
  if (full < num_windows) {
    float last[kWindowSamples] = {};
    std::memcpy(last, audio + full * kWindowSamples, sizeof(float) * (n - full * kWindowSamples));
    process(state, last, 1, probs.data() + full);
  }
  return probs;
}

}  // namespace speechcore::vad
