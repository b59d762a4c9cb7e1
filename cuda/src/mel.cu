// Log-mel spectrogram: frames -> windowed samples (float32) -> 400-point DFT in float64
// (twiddles in shared memory) -> power -> mel sums (float64) -> log10 (kernel 1, 8 frames per
// block, per-block maxima to scratch); the global maximum (kernel 2); floor and scale
// (kernel 3). Same definition as io::log_mel_spectrogram.
#include <algorithm>

#include "kernel_utils.cuh"
#include "speechcore_cuda/mel.h"

namespace speechcore::cuda {

namespace {

using namespace detail;

constexpr int kFrames = 8;    // frames per block of the spectrum kernel
constexpr int kThreads = 256; // >= kMelFreqs: one thread per frequency bin in the DFT
constexpr int kHalf = kMelNFft / 2;
static_assert(kThreads >= kMelFreqs, "one thread per bin");

// numpy "reflect" index (mirror without repeating the edge sample), as io::reflect_index.
__device__ __forceinline__ int64_t reflect_index(int64_t i, int64_t length) {
  if (length == 1) return 0;
  const int64_t period = 2 * (length - 1);
  int64_t r = i % period;
  if (r < 0) r += period;
  return r < length ? r : period - r;
}

__global__ void __launch_bounds__(kThreads) log_mel_spectrum_kernel(const float* __restrict__ audio, int64_t n_samples,
                                                                    int64_t length, int64_t n_frames,
                                                                    const float* __restrict__ filters, int n_mels,
                                                                    float* __restrict__ out, float* __restrict__ maxima) {
  __shared__ double tw_cos[kMelNFft];
  __shared__ double tw_sin[kMelNFft];
  __shared__ float window[kMelNFft];
  __shared__ __align__(16) float frame[kMelNFft][kFrames];  // windowed samples, [j][f]
  __shared__ double power[kFrames][kMelFreqs];
  __shared__ float red[32];

  const int tid = threadIdx.x;
  const int64_t t0 = static_cast<int64_t>(blockIdx.x) * kFrames;

  for (int j = tid; j < kMelNFft; j += kThreads) {
    double s, c;
    sincospi(static_cast<double>(j) / kHalf, &s, &c);  // angle 2 pi j / 400
    tw_cos[j] = c;
    tw_sin[j] = s;
    // np.hanning(401)[:-1] in float64 rounded to float32, the expression of io::hann_window
    const double k = static_cast<double>(2 * j - kMelNFft);
    window[j] = static_cast<float>(0.5 + 0.5 * cos(3.14159265358979323846 * k / static_cast<double>(kMelNFft)));
  }
  __syncthreads();

  // Frame t covers samples [t*hop - 200, t*hop + 200) of the signal extended by reflection
  // (indices past the audio, inside the zero padding, read 0).
  for (int e = tid; e < kFrames * kMelNFft; e += kThreads) {
    const int f = e / kMelNFft, j = e - f * kMelNFft;
    const int64_t t = t0 + f;
    float v = 0.0f;
    if (t < n_frames) {
      int64_t i = t * kMelHop - kHalf + j;
      if (i < 0 || i >= n_samples) i = reflect_index(i, length);
      const float x = i < n_samples ? audio[i] : 0.0f;
      v = x * window[j];  // rounded to float32 as numpy does
    }
    frame[j][f] = v;
  }
  __syncthreads();

  // Direct DFT: thread k computes bin k of all frames; twiddle index (j * k) mod 400.
  if (tid < kMelFreqs) {
    double re[kFrames], im[kFrames];
#pragma unroll
    for (int f = 0; f < kFrames; ++f) re[f] = im[f] = 0.0;
    int idx = 0;
    for (int j = 0; j < kMelNFft; ++j) {
      const double c = tw_cos[idx], s = tw_sin[idx];
      const float4 a = *reinterpret_cast<const float4*>(&frame[j][0]);
      const float4 b = *reinterpret_cast<const float4*>(&frame[j][4]);
      const float xs[kFrames] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
#pragma unroll
      for (int f = 0; f < kFrames; ++f) {
        re[f] = fma(static_cast<double>(xs[f]), c, re[f]);
        im[f] = fma(static_cast<double>(xs[f]), s, im[f]);  // sign of the imaginary part is irrelevant
      }
      idx += tid;
      if (idx >= kMelNFft) idx -= kMelNFft;
    }
#pragma unroll
    for (int f = 0; f < kFrames; ++f) power[f][tid] = re[f] * re[f] + im[f] * im[f];
  }
  __syncthreads();

  // Mel sums: one warp per filter row (lanes over bins), all frames at once.
  const int lane = tid & 31, warp = tid >> 5;
  float local_max = -INFINITY;
  for (int m = warp; m < n_mels; m += kThreads / 32) {
    const float* row = filters + static_cast<int64_t>(m) * kMelFreqs;
    double acc[kFrames];
#pragma unroll
    for (int f = 0; f < kFrames; ++f) acc[f] = 0.0;
    for (int k = lane; k < kMelFreqs; k += 32) {
      const double w = static_cast<double>(row[k]);
#pragma unroll
      for (int f = 0; f < kFrames; ++f) acc[f] = fma(w, power[f][k], acc[f]);
    }
#pragma unroll
    for (int f = 0; f < kFrames; ++f) {
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) acc[f] += __shfl_xor_sync(0xffffffffu, acc[f], o);
    }
    double mine = 0.0;
#pragma unroll
    for (int f = 0; f < kFrames; ++f)
      if (lane == f) mine = acc[f];
    if (lane < kFrames && t0 + lane < n_frames) {
      const float v = log10f(fmaxf(static_cast<float>(mine), 1e-10f));
      out[static_cast<int64_t>(m) * n_frames + t0 + lane] = v;
      local_max = fmaxf(local_max, v);
    }
  }
  const float bm = block_max(local_max, red);
  if (tid == 0) maxima[blockIdx.x] = bm;
}

// One block: the maximum of the per-block maxima -> *global_max.
__global__ void __launch_bounds__(1024) log_mel_max_kernel(const float* __restrict__ maxima, int64_t n,
                                                           float* __restrict__ global_max) {
  __shared__ float red[32];
  float m = -INFINITY;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) m = fmaxf(m, maxima[i]);
  m = block_max(m, red);
  if (threadIdx.x == 0) *global_max = m;
}

__global__ void __launch_bounds__(256) log_mel_scale_kernel(float* __restrict__ out, int64_t n,
                                                            const float* __restrict__ global_max) {
  const float floor_value = *global_max - 8.0f;
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step)
    out[i] = (fmaxf(out[i], floor_value) + 4.0f) / 4.0f;
}

int64_t spectrum_blocks(int64_t n_frames) { return ceil_div(n_frames, kFrames); }

}  // namespace

int64_t log_mel_num_frames(int64_t n_samples, int padding) {
  const int64_t length = n_samples + padding;
  const int64_t padded = length + 2 * kHalf;
  return length >= 1 && padded >= kMelNFft ? (padded - kMelNFft) / kMelHop : 0;
}

size_t log_mel_scratch_bytes(int64_t n_samples, int padding, int /*n_mels*/) {
  const int64_t frames = std::max<int64_t>(log_mel_num_frames(n_samples, padding), 0);
  return static_cast<size_t>(spectrum_blocks(frames) + 1) * sizeof(float);
}

void log_mel(const float* audio, int64_t n_samples, int padding, const float* mel_filters, int n_mels, float* out,
             void* scratch, cudaStream_t stream) {
  require(n_samples >= 0 && padding >= 0, "log_mel: need n_samples >= 0 and padding >= 0, got ", n_samples, ", ",
          padding);
  require(n_mels >= 1 && n_mels <= 4096, "log_mel: n_mels must be in [1, 4096], got ", n_mels);
  const int64_t n_frames = log_mel_num_frames(n_samples, padding);
  if (n_frames < 1)
    fail(ErrorCode::kInvalidAudio, "log_mel: ", n_samples, " samples + ", padding,
         " padding are too short for one frame (hop_length ", kMelHop, ")");
  require(audio != nullptr || n_samples == 0, "log_mel: audio is null");
  require(mel_filters && out && scratch, "log_mel: null pointer");
  const int64_t blocks = spectrum_blocks(n_frames);
  require(blocks < (int64_t(1) << 31), "log_mel: audio too long");
  float* block_maxima = static_cast<float*>(scratch);
  float* global_max = block_maxima + blocks;
  log_mel_spectrum_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
      audio, n_samples, n_samples + padding, n_frames, mel_filters, n_mels, out, block_maxima);
  SC_CUDA_CHECK_LAUNCH("log_mel (spectrum)");
  log_mel_max_kernel<<<1, 1024, 0, stream>>>(block_maxima, blocks, global_max);
  SC_CUDA_CHECK_LAUNCH("log_mel (max)");
  const int64_t total = static_cast<int64_t>(n_mels) * n_frames;
  const unsigned scale_blocks = static_cast<unsigned>(std::min<int64_t>(ceil_div(total, 256), 132 * 8));
  log_mel_scale_kernel<<<scale_blocks, 256, 0, stream>>>(out, total, global_max);
  SC_CUDA_CHECK_LAUNCH("log_mel (scale)");
}

}  // namespace speechcore::cuda
