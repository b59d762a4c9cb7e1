// Whisper log-mel spectrogram on the GPU: the definition of io::log_mel_spectrogram
// (cpp/src/io/audio.cc, faster-whisper's numerics) for n_fft 400, hop 160:
// the signal plus `padding` zeros, centred frames with numpy "reflect" padding, periodic Hann
// window (window * sample rounded to float32), power spectrum, the last frame dropped, mel
// filterbank, log10 of max(mel, 1e-10), floor at (max over the whole spectrogram - 8),
// then (x + 4) / 4.
//
// Numerics: the 400-point DFT (direct, twiddles in shared memory) and the mel sums run in
// float64 as on the CPU (where an FFT is used), so the two differ by summation order only
// (~1e-15 relative) plus float32 log10 rounding (a few ulp): ~1e-6 absolute by design, tested
// at 1e-4. A numpy emulation of this algorithm matched the CPU output bit for bit on the test
// signals; the same emulation with a float32 DFT differed by up to 4e-5 (a loud tone over
// quiet noise: bins 60-80 dB below the peak). Float64 costs ~0.5 GFLOP per 30 s of audio,
// tens of microseconds on an H200 (half-rate fp64).
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace speechcore::cuda {

constexpr int kMelNFft = 400;
constexpr int kMelHop = 160;
constexpr int kMelFreqs = kMelNFft / 2 + 1;  // 201

// Frames of the spectrogram: (n_samples + padding) / 160 (0 when there is not one frame).
int64_t log_mel_num_frames(int64_t n_samples, int padding);

// Bytes of device scratch log_mel needs (per-block maxima and the global maximum).
size_t log_mel_scratch_bytes(int64_t n_samples, int padding, int n_mels);

// audio: device float32 [n_samples] (16 kHz mono); mel_filters: device float32
// [n_mels, 201] (io::mel_filters(16000, 400, n_mels)); out: device float32
// [n_mels, log_mel_num_frames(n_samples, padding)]; scratch: log_mel_scratch_bytes(...) bytes.
// Throws kInvalidAudio when there is not one frame, kInvalidArgument for bad arguments.
void log_mel(const float* audio, int64_t n_samples, int padding, const float* mel_filters, int n_mels, float* out,
             void* scratch, cudaStream_t stream);

}  // namespace speechcore::cuda
