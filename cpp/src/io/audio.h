// The audio frontend: input checks, mono mix, band-limited resampling to 16 kHz and the
// Whisper log-mel spectrogram (numerically the one faster-whisper 1.2.1 computes).
#pragma once

#include <cstddef>
#include <vector>

#include "speechcore/tensor.h"

namespace speechcore::core {
class ThreadPool;
}

namespace speechcore::io {

constexpr int kWhisperSampleRate = 16000;

struct MelOptions {
  int n_mels = 80;          // mel bins: 80 (Whisper v1/v2) or 128 (large-v3)
  int n_fft = 400;          // STFT size in samples (25 ms at 16 kHz)
  int hop_length = 160;     // STFT hop in samples (10 ms at 16 kHz)
  int sample_rate = 16000;  // only shapes the filterbank; the input must already be at this rate
  int padding = 160;        // zero samples appended before the STFT, as faster-whisper's
                            // transcribe does (the default); 0 disables
};

// Log-mel spectrogram of mono audio, as faster-whisper's FeatureExtractor(feature_size=n_mels)
// (audio, padding=...) computes it: the signal plus `padding` zeros, centered frames with
// reflect padding, periodic Hann window, power spectrum, the last frame dropped, mel
// filterbank, log10 clamped at 1e-10, floor at (global max - 8), then (x + 4) / 4.
// The FFT and the mel sums run in double, so the result is at least as accurate as numpy's
// float32 pocketfft path. Frames run in parallel on `pool` when one is given.
//   samples: [num_samples] mono float32 at options.sample_rate
//   returns: [n_mels, (num_samples + padding) / hop_length] float32
// Throws kInvalidArgument for bad options, kInvalidAudio when there is not one frame.
Tensor log_mel_spectrogram(const float* samples, size_t num_samples, const MelOptions& options,
                           core::ThreadPool* pool = nullptr);

// The mel filterbank faster-whisper builds (Slaney mel scale, Slaney area normalization),
// computed in double and rounded to float32. Returns [n_mels, n_fft / 2 + 1], row-major.
std::vector<float> mel_filters(int sample_rate, int n_fft, int n_mels);

// Throws kInvalidAudio naming the index of the first NaN or infinite sample.
//   x: [n]
void validate_audio(const float* x, size_t n);

// Average of the channels of interleaved audio.
//   interleaved: [num_frames, channels] -> returns [num_frames]
std::vector<float> to_mono(const float* interleaved, size_t num_frames, int channels);

// Band-limited resampling by the exact ratio to_rate / from_rate (reduced by their gcd):
// a polyphase Kaiser-windowed sinc whose cutoff sits just below the lower of the two
// Nyquist frequencies (flat to 0.9 x Nyquist, >= 80 dB stop band from Nyquist up).
// Rates must be within [1000, 384000] Hz. Samples outside the input are taken as zero.
//   x: [n] -> returns [ceil(n * to_rate / from_rate)]
std::vector<float> resample(const float* x, size_t n, int from_rate, int to_rate);

// validate_audio + to_mono + resample to 16 kHz: what the engine wants from user audio.
//   pcm: [num_frames, channels] interleaved -> returns [num_frames * 16000 / sample_rate]
// Throws kInvalidArgument for sample_rate <= 0 or channels <= 0, kInvalidAudio for empty
// audio or NaN/inf samples.
std::vector<float> prepare_audio(const float* pcm, size_t num_frames, int sample_rate,
                                 int channels);
// The same, taking the samples (pcm.size() == num_frames * channels): 16 kHz mono audio comes
// back in the same buffer, checked, without a copy.
std::vector<float> prepare_audio(std::vector<float>&& pcm, size_t num_frames, int sample_rate, int channels);

}  // namespace speechcore::io
