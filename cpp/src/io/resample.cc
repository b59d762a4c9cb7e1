// Band-limited resampling by an exact rational ratio with a polyphase Kaiser-windowed sinc.
//
// Output sample j sits at input position j * M / L (L/M = to_rate/from_rate reduced), so
// it is sum_i x[i] h(j*M/L - i) with h a low-pass kernel at the lower Nyquist frequency.
// The kernel values for each of the L sub-sample phases are precomputed (one row of taps per
// phase, normalized to unit DC gain). When L and M are both large (nearly coprime rates),
// a table with a finer-than-needed phase grid is built instead and adjacent rows are
// interpolated linearly (kernel error < 1e-5 of its peak, well below the stop band).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>

#include "core/status.h"
#include "io/audio.h"

namespace speechcore::io {

namespace {

constexpr double kPi = 3.14159265358979323846;
constexpr int kMinRate = 1000;
constexpr int kMaxRate = 384000;
constexpr double kStopBandDb = 90.0;      // Kaiser design attenuation
constexpr double kPassEdge = 0.90;        // flat up to 0.90 x the lower Nyquist ...
constexpr double kStopEdge = 1.00;        // ... and attenuated from the lower Nyquist on
constexpr int64_t kMaxExactEntries = 1 << 21;  // biggest exact phase table (floats)

double bessel_i0(double x) {
  double sum = 1.0, term = 1.0;
  const double q = 0.25 * x * x;
  for (int k = 1; k < 500; ++k) {
    term *= q / (static_cast<double>(k) * k);
    sum += term;
    if (term < 1e-17 * sum) break;
  }
  return sum;
}

struct Kernel {
  double cutoff;      // -6 dB frequency, cycles per input sample
  double half_width;  // support is |t| <= half_width input samples
  double beta;        // Kaiser shape
  double i0_beta;

  double operator()(double t) const {
    const double u = t / half_width;
    if (u <= -1.0 || u >= 1.0) return 0.0;
    const double a = 2.0 * cutoff * t;
    const double sinc = a == 0.0 ? 1.0 : std::sin(kPi * a) / (kPi * a);
    return 2.0 * cutoff * sinc * bessel_i0(beta * std::sqrt(1.0 - u * u)) / i0_beta;
  }
};

// Dot product with independent partial sums (lets the compiler keep several lanes busy).
inline float dot(const float* a, const float* b, int n) {
  float s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int l = 0; l < 8; ++l) s[l] += a[i + l] * b[i + l];
  }
  float tail = 0.0f;
  for (; i < n; ++i) tail += a[i] * b[i];
  return ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7])) + tail;
}

class PolyphaseTable {
 public:
  PolyphaseTable(const Kernel& kernel, int phases, bool extra_row) : phases_(phases) {
    reach_ = static_cast<int>(std::floor(kernel.half_width)) + 1;
    taps_ = 2 * reach_;
    const int rows = phases + (extra_row ? 1 : 0);
    coeffs_.resize(static_cast<size_t>(rows) * taps_);
    std::vector<double> row(taps_);
    for (int p = 0; p < rows; ++p) {
      const double frac = static_cast<double>(p) / phases;
      double sum = 0.0;
      for (int k = 0; k < taps_; ++k) {
        const int d = k - reach_ + 1;  // tap k reads x[base + d]
        row[k] = kernel(frac - d);
        sum += row[k];
      }
      for (int k = 0; k < taps_; ++k) coeffs_[static_cast<size_t>(p) * taps_ + k] =
          static_cast<float>(row[k] / sum);
    }
  }
  int taps() const { return taps_; }
  int reach() const { return reach_; }  // taps cover x[base - reach + 1 .. base + reach]
  int phases() const { return phases_; }
  const float* row(int p) const { return &coeffs_[static_cast<size_t>(p) * taps_]; }

 private:
  int phases_, reach_ = 0, taps_ = 0;
  std::vector<float> coeffs_;
};

// sum_k x[first + k] * c[k] with x taken as zero outside [0, n).
float edge_dot(const float* x, int64_t n, int64_t first, const float* c, int taps) {
  float acc = 0.0f;
  for (int k = 0; k < taps; ++k) {
    const int64_t i = first + k;
    if (i >= 0 && i < n) acc += x[i] * c[k];
  }
  return acc;
}

}  // namespace

std::vector<float> resample(const float* x, size_t n, int from_rate, int to_rate) {
  SC_CHECK(from_rate >= kMinRate && from_rate <= kMaxRate && to_rate >= kMinRate &&
               to_rate <= kMaxRate,
           ErrorCode::kInvalidArgument, "resample: sample rates must be within [", kMinRate, ", ",
           kMaxRate, "] Hz, got ", from_rate, " -> ", to_rate);
  SC_CHECK(x != nullptr || n == 0, ErrorCode::kInvalidArgument, "resample: samples is null");
  if (n == 0) return {};
  if (from_rate == to_rate) return std::vector<float>(x, x + n);

  const int64_t g = std::gcd(from_rate, to_rate);
  const int64_t up = to_rate / g, down = from_rate / g;  // L and M
  const uint64_t n_out = (static_cast<uint64_t>(n) * up + down - 1) / down;

  // Kernel in input-sample units. The band edge is the lower of the two Nyquist rates,
  // i.e. `ratio` x the input Nyquist; Kaiser's formula sizes the window for the transition.
  const double ratio = std::min(1.0, static_cast<double>(up) / down);
  Kernel kernel;
  kernel.cutoff = 0.5 * ratio * 0.5 * (kPassEdge + kStopEdge);
  const double transition = 2.0 * kPi * 0.5 * ratio * (kStopEdge - kPassEdge);  // rad/sample
  const double length = (kStopBandDb - 7.95) / (2.285 * transition);
  kernel.half_width = 0.5 * length;
  kernel.beta = 0.1102 * (kStopBandDb - 8.7);
  kernel.i0_beta = bessel_i0(kernel.beta);

  const int64_t reach_estimate = static_cast<int64_t>(kernel.half_width) + 1;
  const bool exact = up * 2 * reach_estimate <= kMaxExactEntries;
  // Interpolated grid: the kernel varies on the scale of 1 / cutoff input samples, so a grid
  // of ~1000 points per period of the cutoff keeps linear interpolation error ~1e-6.
  const int phases = exact ? static_cast<int>(up)
                           : static_cast<int>(std::max(4.0, std::ceil(2048.0 * ratio)));
  const PolyphaseTable table(kernel, phases, !exact);
  const int taps = table.taps(), reach = table.reach();
  const int64_t in_n = static_cast<int64_t>(n);

  std::vector<float> y(n_out);
  for (uint64_t j = 0; j < n_out; ++j) {
    const uint64_t num = j * static_cast<uint64_t>(down);
    const int64_t base = static_cast<int64_t>(num / up);
    const int64_t phase = static_cast<int64_t>(num % up);
    const int64_t first = base - reach + 1;
    const bool inside = first >= 0 && first + taps <= in_n;
    if (exact) {
      const float* c = table.row(static_cast<int>(phase));
      y[j] = inside ? dot(x + first, c, taps) : edge_dot(x, in_n, first, c, taps);
    } else {
      const double pos = static_cast<double>(phase) / up * phases;
      const int p = std::min(static_cast<int>(pos), phases - 1);
      const float a = static_cast<float>(pos - p);
      const float* c0 = table.row(p);
      const float* c1 = table.row(p + 1);
      const float y0 = inside ? dot(x + first, c0, taps) : edge_dot(x, in_n, first, c0, taps);
      const float y1 = inside ? dot(x + first, c1, taps) : edge_dot(x, in_n, first, c1, taps);
      y[j] = y0 + a * (y1 - y0);
    }
  }
  return y;
}

}  // namespace speechcore::io
