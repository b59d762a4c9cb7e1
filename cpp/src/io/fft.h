// Mixed-radix FFT in double precision for the audio frontend (any size; radix 2/3/4/5
// butterflies, a generic butterfly for other prime factors).
#pragma once

#include <complex>
#include <vector>

namespace speechcore::io {

// Forward complex DFT of a fixed size n: X[k] = sum_j x[j] exp(-2 pi i j k / n).
// Immutable after construction, so one plan can be shared by many threads.
class ComplexFft {
 public:
  explicit ComplexFft(int n);
  int size() const { return n_; }
  // in: [n], out: [n]; must not alias. Uses no heap memory except for prime factors > 5.
  void forward(const std::complex<double>* in, std::complex<double>* out) const;

 private:
  void work(std::complex<double>* out, const std::complex<double>* in, int in_stride,
            size_t stage) const;

  int n_;
  std::vector<int> radix_;   // radix of each stage, outermost first
  std::vector<int> remain_;  // size of each sub-transform below a stage (product of later radices)
  std::vector<std::complex<double>> twiddles_;  // exp(-2 pi i k / n), k in [0, n)
};

// Forward DFT of a real sequence of size n, returning the n/2 + 1 non-negative frequencies.
// Even n goes through one complex FFT of size n/2.
class RealFft {
 public:
  explicit RealFft(int n);
  int size() const { return n_; }
  // Scratch space forward() needs, in complex values.
  size_t scratch_size() const { return static_cast<size_t>(2 * n_ + 2); }
  // in: [n] real, out: [n/2 + 1], scratch: [scratch_size()].
  void forward(const double* in, std::complex<double>* out, std::complex<double>* scratch) const;

 private:
  int n_;
  ComplexFft half_;                               // size n/2 (even n) or n (odd n)
  std::vector<std::complex<double>> twiddles_;    // exp(-2 pi i k / n), k in [0, n/2]
};

}  // namespace speechcore::io
