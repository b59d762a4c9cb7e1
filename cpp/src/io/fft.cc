// Mixed-radix decimation-in-time FFT: each stage splits a transform of size p*m into p
// interleaved transforms of size m, computed recursively, then combines them with
// radix-p butterflies.
#include "io/fft.h"

#include <cmath>

#include "core/status.h"

namespace speechcore::io {

using cd = std::complex<double>;

namespace {

constexpr double kPi = 3.14159265358979323846;

cd unit_root(long k, long n) {  // exp(-2 pi i k / n), k reduced to keep the angle small
  const double a = -2.0 * kPi * static_cast<double>(k % n) / static_cast<double>(n);
  return {std::cos(a), std::sin(a)};
}

// Multiplication by -i and +i without rounding.
inline cd mul_neg_i(cd z) { return {z.imag(), -z.real()}; }
inline cd mul_pos_i(cd z) { return {-z.imag(), z.real()}; }

}  // namespace

ComplexFft::ComplexFft(int n) : n_(n) {
  SC_CHECK(n >= 1, ErrorCode::kInvalidArgument, "FFT size must be >= 1, got ", n);
  int rest = n;
  for (int p : {4, 2, 3, 5}) {
    while (rest % p == 0) {
      radix_.push_back(p);
      rest /= p;
    }
  }
  for (int p = 7; rest > 1; p += 2) {
    if (static_cast<long>(p) * p > rest) p = rest;  // what is left is prime
    while (rest % p == 0) {
      radix_.push_back(p);
      rest /= p;
    }
  }
  if (radix_.empty()) radix_.push_back(1);  // n == 1
  remain_.resize(radix_.size());
  int m = n;
  for (size_t s = 0; s < radix_.size(); ++s) {
    m /= radix_[s];
    remain_[s] = m;
  }
  twiddles_.resize(n);
  for (int k = 0; k < n; ++k) twiddles_[k] = unit_root(k, n);
}

void ComplexFft::forward(const cd* in, cd* out) const {
  if (n_ == 1) {
    out[0] = in[0];
    return;
  }
  work(out, in, 1, 0);
}

void ComplexFft::work(cd* out, const cd* in, int in_stride, size_t stage) const {
  const int p = radix_[stage];
  const int m = remain_[stage];
  if (m == 1) {
    for (int q = 0; q < p; ++q) out[q] = in[static_cast<size_t>(q) * in_stride];
  } else {
    // Sub-transform q holds the samples q, q + p, q + 2p, ... of this level's input.
    for (int q = 0; q < p; ++q) work(out + q * m, in + static_cast<size_t>(q) * in_stride,
                                     in_stride * p, stage + 1);
  }
  // This level's transform has size p*m = n / in_stride, so its twiddle
  // exp(-2 pi i j / (p*m)) is twiddles_[j * in_stride].
  const cd* tw = twiddles_.data();
  const size_t s = static_cast<size_t>(in_stride);
  switch (p) {
    case 2:
      for (int k = 0; k < m; ++k) {
        const cd a = out[k], b = out[k + m] * tw[k * s];
        out[k] = a + b;
        out[k + m] = a - b;
      }
      return;
    case 4:
      for (int k = 0; k < m; ++k) {
        const cd t0 = out[k];
        const cd t1 = out[k + m] * tw[k * s];
        const cd t2 = out[k + 2 * m] * tw[2 * k * s];
        const cd t3 = out[k + 3 * m] * tw[3 * k * s];
        const cd e0 = t0 + t2, e1 = t0 - t2, o0 = t1 + t3, o1 = mul_neg_i(t1 - t3);
        out[k] = e0 + o0;
        out[k + m] = e1 + o1;
        out[k + 2 * m] = e0 - o0;
        out[k + 3 * m] = e1 - o1;
      }
      return;
    case 3: {
      const double c = -0.5, sn = std::sin(2.0 * kPi / 3.0);
      for (int k = 0; k < m; ++k) {
        const cd t0 = out[k];
        const cd t1 = out[k + m] * tw[k * s];
        const cd t2 = out[k + 2 * m] * tw[2 * k * s];
        const cd a = t1 + t2, b = mul_neg_i(sn * (t1 - t2));
        const cd base = t0 + c * a;
        out[k] = t0 + a;
        out[k + m] = base + b;
        out[k + 2 * m] = base - b;
      }
      return;
    }
    case 5: {
      const double c1 = std::cos(2.0 * kPi / 5.0), c2 = std::cos(4.0 * kPi / 5.0);
      const double s1 = std::sin(2.0 * kPi / 5.0), s2 = std::sin(4.0 * kPi / 5.0);
      for (int k = 0; k < m; ++k) {
        const cd t0 = out[k];
        const cd t1 = out[k + m] * tw[k * s];
        const cd t2 = out[k + 2 * m] * tw[2 * k * s];
        const cd t3 = out[k + 3 * m] * tw[3 * k * s];
        const cd t4 = out[k + 4 * m] * tw[4 * k * s];
        const cd a1 = t1 + t4, b1 = t1 - t4, a2 = t2 + t3, b2 = t2 - t3;
        const cd r1 = t0 + c1 * a1 + c2 * a2, r2 = t0 + c2 * a1 + c1 * a2;
        const cd i1 = mul_neg_i(s1 * b1 + s2 * b2), i2 = mul_neg_i(s2 * b1 - s1 * b2);
        out[k] = t0 + a1 + a2;
        out[k + m] = r1 + i1;
        out[k + 4 * m] = r1 - i1;
        out[k + 2 * m] = r2 + i2;
        out[k + 3 * m] = r2 - i2;
      }
      return;
    }
    default: {
      // Generic radix: direct p-point DFT of the twiddled inputs.
      std::vector<cd> t(p);
      const size_t root_step = static_cast<size_t>(n_ / p);  // exp(-2 pi i / p)
      for (int k = 0; k < m; ++k) {
        for (int q = 0; q < p; ++q) t[q] = out[k + q * m] * tw[(q * k * s) % n_];
        for (int r = 0; r < p; ++r) {
          cd acc = t[0];
          for (int q = 1; q < p; ++q) acc += t[q] * tw[((q * r) % p) * root_step];
          out[k + r * m] = acc;
        }
      }
      return;
    }
  }
}

RealFft::RealFft(int n) : n_(n), half_(n >= 2 && n % 2 == 0 ? n / 2 : std::max(n, 1)) {
  SC_CHECK(n >= 1, ErrorCode::kInvalidArgument, "FFT size must be >= 1, got ", n);
  twiddles_.resize(n / 2 + 1);
  for (int k = 0; k <= n / 2; ++k) twiddles_[k] = unit_root(k, n);
}

void RealFft::forward(const double* in, cd* out, cd* scratch) const {
  cd* z = scratch;
  cd* zf = scratch + n_;
  if (n_ % 2 != 0) {  // odd size: a full complex transform
    for (int j = 0; j < n_; ++j) z[j] = cd(in[j], 0.0);
    half_.forward(z, zf);
    for (int k = 0; k <= n_ / 2; ++k) out[k] = zf[k];
    return;
  }
  // Pack even samples into the real part and odd samples into the imaginary part; the
  // half-size transform Z then gives E[k] = (Z[k] + conj Z[h-k]) / 2 (even samples) and
  // O[k] = (Z[k] - conj Z[h-k]) / 2i (odd samples), and X[k] = E[k] + w^k O[k].
  const int h = n_ / 2;
  for (int j = 0; j < h; ++j) z[j] = cd(in[2 * j], in[2 * j + 1]);
  half_.forward(z, zf);
  for (int k = 0; k <= h; ++k) {
    const cd a = zf[k == h ? 0 : k];
    const cd b = std::conj(zf[k == 0 ? 0 : h - k]);
    const cd even = 0.5 * (a + b);
    const cd odd = mul_neg_i(0.5 * (a - b));
    out[k] = even + twiddles_[k] * odd;
  }
}

}  // namespace speechcore::io
