// FFT vs a naive long-double DFT over many sizes (every radix path, primes, odd/even real
// sizes), plus C++-level checks of the audio frontend entry points.
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <complex>
#include <random>
#include <vector>

#include "check.h"
#include "core/thread_pool.h"
#include "io/audio.h"
#include "io/fft.h"
#include "speechcore/audio.h"
#include "speechcore/status.h"

using namespace speechcore;

namespace {

std::vector<std::complex<long double>> naive_dft(const std::vector<std::complex<double>>& x) {
  const size_t n = x.size();
  const long double pi = 3.141592653589793238462643383279502884L;
  std::vector<std::complex<long double>> out(n);
  for (size_t k = 0; k < n; ++k) {
    std::complex<long double> acc = 0;
    for (size_t j = 0; j < n; ++j) {
      const long double a = -2 * pi * static_cast<long double>((j * k) % n) / n;
      acc += std::complex<long double>(x[j].real(), x[j].imag()) *
             std::complex<long double>(std::cos(a), std::sin(a));
    }
    out[k] = acc;
  }
  return out;
}

int checked_error_code(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return static_cast<int>(e.code());
  }
  return -1;
}

}  // namespace

SC_TEST(complex_and_real_fft_match_naive_dft) {
  std::mt19937 rng(7);
  std::normal_distribution<double> dist;
  std::vector<int> sizes;
  for (int n = 1; n <= 64; ++n) sizes.push_back(n);
  for (int n : {97, 121, 128, 143, 200, 243, 250, 256, 400, 401, 462, 512, 1000}) {
    sizes.push_back(n);
  }
  for (int n : sizes) {
    std::vector<std::complex<double>> x(n), y(n);
    for (auto& v : x) v = {dist(rng), dist(rng)};
    io::ComplexFft fft(n);
    fft.forward(x.data(), y.data());
    const auto ref = naive_dft(x);
    double worst = 0;
    for (int k = 0; k < n; ++k) {
      worst = std::max(worst, static_cast<double>(std::abs(std::complex<long double>(
                                                      y[k].real(), y[k].imag()) - ref[k])));
    }
    EXPECT_NEAR(worst / std::sqrt(static_cast<double>(n)), 0.0, 1e-13);

    std::vector<double> r(n);
    std::vector<std::complex<double>> rc(n), out(n / 2 + 1);
    for (int j = 0; j < n; ++j) {
      r[j] = dist(rng);
      rc[j] = {r[j], 0.0};
    }
    io::RealFft rfft(n);
    std::vector<std::complex<double>> scratch(rfft.scratch_size());
    rfft.forward(r.data(), out.data(), scratch.data());
    const auto rref = naive_dft(rc);
    double rworst = 0;
    for (int k = 0; k <= n / 2; ++k) {
      rworst = std::max(rworst, static_cast<double>(std::abs(std::complex<long double>(
                                                        out[k].real(), out[k].imag()) - rref[k])));
    }
    EXPECT_NEAR(rworst / std::sqrt(static_cast<double>(n)), 0.0, 1e-13);
  }
  EXPECT_THROWS(io::ComplexFft(0));
}

SC_TEST(log_mel_shapes_pool_and_errors) {
  std::vector<float> x(16000 * 3 + 7);
  for (size_t i = 0; i < x.size(); ++i) {
    x[i] = 0.3f * std::sin(0.05f * i) + 0.01f * std::cos(1.3f * i);
  }
  io::MelOptions o;
  Tensor a = io::log_mel_spectrogram(x.data(), x.size(), o);
  EXPECT_TRUE(a.dim(0) == 80 && a.dim(1) == static_cast<int64_t>((x.size() + 160) / 160));
  core::ThreadPool pool(3);
  o.n_mels = 128;
  Tensor b = io::log_mel_spectrogram(x.data(), x.size(), o, &pool);
  Tensor c = io::log_mel_spectrogram(x.data(), x.size(), o);
  bool same = b.dim(0) == 128 && b.numel() == c.numel();
  for (int64_t i = 0; same && i < b.numel(); ++i) same = b.data<float>()[i] == c.data<float>()[i];
  EXPECT_TRUE(same);
  io::MelOptions none;
  none.padding = 0;
  EXPECT_TRUE(checked_error_code([&] { io::log_mel_spectrogram(x.data(), 10, none); }) ==
              static_cast<int>(ErrorCode::kInvalidAudio));
}

SC_TEST(prepare_audio_errors_and_rates) {
  std::vector<float> x(441 * 20, 0.25f);
  EXPECT_TRUE(io::prepare_audio(x.data(), x.size(), 44100, 1).size() == 160 * 20);
  EXPECT_TRUE(io::prepare_audio(x.data(), x.size() / 2, 8000, 2).size() == 441 * 20);
  EXPECT_TRUE(checked_error_code([&] { io::prepare_audio(x.data(), 0, 16000, 1); }) ==
              static_cast<int>(ErrorCode::kInvalidAudio));
  EXPECT_TRUE(checked_error_code([&] { io::prepare_audio(x.data(), 10, 0, 1); }) ==
              static_cast<int>(ErrorCode::kInvalidArgument));
  EXPECT_TRUE(checked_error_code([&] { io::prepare_audio(x.data(), 10, 16000, 0); }) ==
              static_cast<int>(ErrorCode::kInvalidArgument));
  // Every table path (exact phases, interpolated phases) on tiny and normal inputs.
  const int pairs[][2] = {{44101, 16000}, {16000, 44101}, {1000, 384000}, {384000, 1000},
                          {48000, 16000}, {8000, 16000}, {16000, 16000}};
  for (const auto& pr : pairs) {
    for (size_t n : {size_t{1}, size_t{2}, size_t{5}, size_t{3000}}) {
      const std::vector<float> y = io::resample(x.data(), n, pr[0], pr[1]);
      const uint64_t expect = (static_cast<uint64_t>(n) * pr[1] + pr[0] - 1) / pr[0];
      bool finite = true;
      for (float v : y) finite = finite && std::isfinite(v) && std::fabs(v) < 1.0f;
      EXPECT_TRUE(y.size() == expect && finite);
    }
  }
  x[5] = std::nanf("");
  EXPECT_TRUE(checked_error_code([&] { io::validate_audio(x.data(), x.size()); }) ==
              static_cast<int>(ErrorCode::kInvalidAudio));
  EXPECT_TRUE(checked_error_code([&] { read_wav("/nonexistent/dir/a.wav"); }) ==
              static_cast<int>(ErrorCode::kNotFound));
}

// Every truncation and many random corruptions of a valid WAV must either decode or throw
// speechcore::Error: no crash, no other exception, no huge allocation.
SC_TEST(read_wav_survives_truncation_and_corruption) {
  auto le = [](std::vector<uint8_t>& v, uint32_t x, int bytes) {
    for (int i = 0; i < bytes; ++i) v.push_back(static_cast<uint8_t>(x >> (8 * i)));
  };
  std::vector<uint8_t> wav;
  const uint32_t frames = 50, channels = 2, block = channels * 3;
  for (char c : std::string("RIFF")) wav.push_back(c);
  le(wav, 4 + 8 + 16 + 8 + 7 + 1 + 8 + frames * block, 4);
  for (char c : std::string("WAVEfmt ")) wav.push_back(c);
  le(wav, 16, 4); le(wav, 1, 2); le(wav, channels, 2); le(wav, 22050, 4);
  le(wav, 22050 * block, 4); le(wav, block, 2); le(wav, 24, 2);
  for (char c : std::string("LIST")) wav.push_back(c);
  le(wav, 7, 4);
  for (int i = 0; i < 8; ++i) wav.push_back('x');  // 7 bytes + pad
  for (char c : std::string("data")) wav.push_back(c);
  le(wav, frames * block, 4);
  for (uint32_t i = 0; i < frames * block; ++i) wav.push_back(static_cast<uint8_t>(i * 37));

  const std::string path = "/tmp/speechcore_test_audio_" + std::to_string(::getpid()) + ".wav";
  auto write = [&](const std::vector<uint8_t>& bytes, size_t n) {
    FILE* f = std::fopen(path.c_str(), "wb");
    if (n > 0) std::fwrite(bytes.data(), 1, n, f);
    std::fclose(f);
  };
  int other_failures = 0, decoded = 0;
  auto attempt = [&] {
    try {
      AudioBuffer b = read_wav(path);
      ++decoded;
      if (b.channels < 1 || b.samples.size() % b.channels != 0) ++other_failures;
    } catch (const Error&) {
    } catch (...) {
      ++other_failures;
    }
  };
  write(wav, wav.size());
  AudioBuffer full = read_wav(path);
  EXPECT_TRUE(full.channels == 2 && full.sample_rate == 22050 && full.num_frames() == frames);
  for (size_t n = 0; n < wav.size(); ++n) {
    write(wav, n);
    attempt();
  }
  std::mt19937 rng(3);
  for (int trial = 0; trial < 2000; ++trial) {
    std::vector<uint8_t> bad = wav;
    const int flips = 1 + trial % 4;
    for (int i = 0; i < flips; ++i) bad[rng() % 60] = static_cast<uint8_t>(rng());
    write(bad, bad.size());
    attempt();
  }
  std::remove(path.c_str());
  EXPECT_TRUE(other_failures == 0);
  EXPECT_TRUE(decoded > 0);
}

SC_TEST_MAIN()
