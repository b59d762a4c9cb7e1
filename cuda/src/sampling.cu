// Whisper logits rules + greedy pick or sampled draw (one block per sequence) and the no-speech
// probability.
// Log-sum-exps are computed as on the CPU (ops::logsumexp): max, then sum of exp(x - max) in
// float32, lse = max + log(sum).
#include <climits>
#include <cmath>

#include "kernel_utils.cuh"
#include "speechcore_cuda/sampling.h"

namespace speechcore::cuda {

namespace {

using namespace detail;

constexpr int kThreads = 1024;

__device__ __forceinline__ void disable_range(float* l, int begin, int end, int vocab) {  // [begin, end)
  const int b = max(begin, 0), e = min(end, vocab);
  for (int i = b + static_cast<int>(threadIdx.x); i < e; i += blockDim.x) l[i] = -INFINITY;
}

__device__ __forceinline__ int block_max_int(int v, int* red) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = max(v, __shfl_xor_sync(0xffffffffu, v, o));
  if (lane == 0) red[warp] = v;
  __syncthreads();
  int r = lane < warps ? red[lane] : INT_MIN;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) r = max(r, __shfl_xor_sync(0xffffffffu, r, o));
  __syncthreads();
  return r;
}

// (value, index) argmax: larger value wins, the lower index among equal values.
__device__ __forceinline__ void argmax_merge(float& v, int& i, float ov, int oi) {
  if (ov > v || (ov == v && oi < i)) {
    v = ov;
    i = oi;
  }
}

__device__ __forceinline__ void block_argmax(float& v, int& i, float* redv, int* redi) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1)
    argmax_merge(v, i, __shfl_xor_sync(0xffffffffu, v, o), __shfl_xor_sync(0xffffffffu, i, o));
  if (lane == 0) {
    redv[warp] = v;
    redi[warp] = i;
  }
  __syncthreads();
  v = lane < warps ? redv[lane] : -INFINITY;
  i = lane < warps ? redi[lane] : INT_MAX;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1)
    argmax_merge(v, i, __shfl_xor_sync(0xffffffffu, v, o), __shfl_xor_sync(0xffffffffu, i, o));
  __syncthreads();
}

// f(i, l[i]) for this thread's i = begin + threadIdx.x, + blockDim.x, ... < end, in that order,
// with kScanLoads loads in flight (a row of logits is ~52k floats: one load at a time made every
// pass over it a chain of ~50 memory round trips).
constexpr int kScanLoads = 8;
template <typename F>
__device__ __forceinline__ void scan_row(const float* l, int begin, int end, F&& f) {
  const int step = static_cast<int>(blockDim.x);
  int i = begin + static_cast<int>(threadIdx.x);
  for (; i + (kScanLoads - 1) * step < end; i += kScanLoads * step) {
    float x[kScanLoads];
#pragma unroll
    for (int u = 0; u < kScanLoads; ++u) x[u] = l[i + u * step];
#pragma unroll
    for (int u = 0; u < kScanLoads; ++u) f(i + u * step, x[u]);
  }
  for (; i < end; i += step) f(i, l[i]);
}

// log(sum(exp(x))) over [begin, end) given the range's maximum m (-inf when all -inf).
__device__ float block_lse(const float* l, int begin, int end, float m, float* red) {
  float s = 0.0f;
  if (m != -INFINITY) scan_row(l, begin, end, [&](int, float x) { s += expf(x - m); });
  s = block_sum(s, red);
  return m == -INFINITY ? m : m + logf(s);
}

// One draw from softmax(log_probs / T) over the masked row l (lse: its log-sum-exp, top: its
// maximum), as runtime::sample_token: p_i = float(l_i - lse) * inv_t, q_i = exp(p_i - max p),
// the first i (q_i > 0) whose cumulative sum exceeds u * sum(q). Thread t sums a contiguous
// chunk in double, a block scan places the chunks, and the thread whose chunk holds the target
// walks it; when rounding leaves the target past the end, the last token with q_i > 0.
__device__ int sample_draw(const float* l, int vocab, float top, float lse, float inv_t, double u, int* redi) {
  __shared__ double scan[kThreads];
  __shared__ int found;
  const int tid = threadIdx.x;
  const float m = (top - lse) * inv_t;
  const int chunk = (vocab + blockDim.x - 1) / blockDim.x;
  const int i0 = min(tid * chunk, vocab), i1 = min(i0 + chunk, vocab);
  double local = 0.0;
  int last = -1;
  for (int i = i0; i < i1; ++i) {
    const float q = expf((l[i] - lse) * inv_t - m);
    if (q > 0.0f) {
      local += q;
      last = i;
    }
  }
  scan[tid] = local;
  if (tid == 0) found = -1;
  __syncthreads();
  for (int o = 1; o < static_cast<int>(blockDim.x); o <<= 1) {  // inclusive scan (Hillis-Steele)
    const double v = tid >= o ? scan[tid - o] : 0.0;
    __syncthreads();
    scan[tid] += v;
    __syncthreads();
  }
  const double target = u * scan[blockDim.x - 1];
  const double before = tid > 0 ? scan[tid - 1] : 0.0;
  if (local > 0.0 && before <= target && target < scan[tid]) {
    double cum = before;
    int pick = last;
    for (int i = i0; i < i1; ++i) {
      const float q = expf((l[i] - lse) * inv_t - m);
      if (q <= 0.0f) continue;
      cum += q;
      if (target < cum) {
        pick = i;
        break;
      }
    }
    found = pick;
  }
  last = block_max_int(last, redi);  // syncs: `found` is visible after it
  return found >= 0 ? found : last;
}

// kSample: the pick is a draw (sample_draw with uniform[b], 1 / temperature); else the argmax.
template <bool kSample>
__global__ void __launch_bounds__(kThreads) whisper_pick_kernel(float* __restrict__ logits,
                                                                int32_t* __restrict__ generated,
                                                                const int32_t* __restrict__ rows, bool append,
                                                                const int32_t* __restrict__ step,
                                                                const int32_t* __restrict__ suppress, int n_suppress,
                                                                const int32_t* __restrict__ suppress_begin,
                                                                int n_suppress_begin, WhisperRuleParams p,
                                                                const double* __restrict__ uniform, float inv_t,
                                                                int32_t* __restrict__ next_token,
                                                                float* __restrict__ token_logprob, int vocab,
                                                                int max_steps) {
  __shared__ float red[32];
  __shared__ int redi[32];
  const int b = blockIdx.x;
  const int tid = threadIdx.x;
  float* l = logits + static_cast<int64_t>(b) * vocab;
  int32_t* gen = generated + static_cast<int64_t>(rows ? rows[b] : b) * max_steps;
  const int s = min(max(step[b], 0), max_steps);  // block-uniform: every branch below is too

  // 1. suppressed tokens
  for (int k = tid; k < n_suppress; k += blockDim.x) {
    const int id = suppress[k];
    if (id >= 0 && id < vocab) l[id] = -INFINITY;
  }
  if (s == 0)
    for (int k = tid; k < n_suppress_begin; k += blockDim.x) {
      const int id = suppress_begin[k];
      if (id >= 0 && id < vocab) l[id] = -INFINITY;
    }

  // 2. timestamp rules
  bool check_mass = false;
  const int tb = p.timestamp_begin, te = p.timestamp_end;
  if (p.timestamps) {
    if (tid == 0) l[p.no_timestamps] = -INFINITY;
    if (s == 0) {
      disable_range(l, 0, tb, vocab);
      if (p.max_initial_timestamp_index >= 0) disable_range(l, tb + p.max_initial_timestamp_index + 1, te + 1, vocab);
    } else {
      const int last = gen[s - 1];
      if (last >= tb) {
        const int penultimate = s >= 2 ? gen[s - 2] : last;
        if (penultimate >= tb) {
          disable_range(l, tb, te + 1, vocab);  // after a pair, text
        } else {
          disable_range(l, 0, p.eot, vocab);  // a closing timestamp or end-of-text
          disable_range(l, tb, last, vocab);
          check_mass = true;
        }
      } else {
        check_mass = true;
        int found = -1;  // position of the last timestamp generated
        for (int t = tid; t < s; t += blockDim.x)
          if (gen[t] >= tb) found = t;  // t increases: the thread's last hit is its largest
        found = block_max_int(found, redi);
        if (found >= 0) disable_range(l, tb, gen[found] + 1, vocab);  // timestamps never decrease
      }
    }
  }
  __syncthreads();  // masks written -> visible to the whole block

  if (check_mass) {
    float m_text = -INFINITY, m_ts = -INFINITY, m_all = -INFINITY;
    scan_row(l, 0, vocab, [&](int i, float x) {
      m_all = fmaxf(m_all, x);
      if (i < tb) m_text = fmaxf(m_text, x);
      else if (i <= te) m_ts = fmaxf(m_ts, x);
    });
    m_all = block_max(m_all, red);
    m_text = block_max(m_text, red);
    m_ts = block_max(m_ts, red);
    const float lse_all = block_lse(l, 0, vocab, m_all, red);
    const float lse_ts = block_lse(l, tb, te + 1, m_ts, red);
    const double ts_logprob = static_cast<double>(lse_ts) - static_cast<double>(lse_all);
    const double text_logprob = static_cast<double>(m_text) - static_cast<double>(lse_all);
    if (ts_logprob > text_logprob) {
      disable_range(l, 0, tb, vocab);
      __syncthreads();
    }
  }

  // 3. greedy pick and its log-probability
  float best_v = -INFINITY;
  int best_i = INT_MAX;
  scan_row(l, 0, vocab, [&](int i, float x) {
    if (x > best_v || best_i == INT_MAX) {
      best_v = x;
      best_i = i;
    }
  });
  block_argmax(best_v, best_i, red, redi);
  const float lse = block_lse(l, 0, vocab, best_v, red);
  int pick = best_i;
  if constexpr (kSample) pick = sample_draw(l, vocab, best_v, lse, inv_t, uniform[b], redi);
  if (tid == 0) {
    next_token[b] = pick;
    if (append && s < max_steps) gen[s] = pick;
    token_logprob[b] = static_cast<float>(static_cast<double>(l[pick]) - static_cast<double>(lse));
  }
}

__global__ void __launch_bounds__(kThreads) no_speech_kernel(const float* __restrict__ logits, int vocab, int id,
                                                             float* __restrict__ out) {
  __shared__ float red[32];
  const float* l = logits + static_cast<int64_t>(blockIdx.x) * vocab;
  float m = -INFINITY;
  for (int i = threadIdx.x; i < vocab; i += blockDim.x) m = fmaxf(m, l[i]);
  m = block_max(m, red);
  const float lse = block_lse(l, 0, vocab, m, red);
  if (threadIdx.x == 0) out[blockIdx.x] = static_cast<float>(exp(static_cast<double>(l[id]) - static_cast<double>(lse)));
}

}  // namespace

namespace {

void pick_step(float* logits, int32_t* generated, const int32_t* rows, bool append, const int32_t* step,
               const int32_t* suppress, int n_suppress, const int32_t* suppress_begin, int n_suppress_begin,
               const WhisperRuleParams& p, const double* uniform, float temperature, int32_t* next_token,
               float* token_logprob, int batch, int vocab, int max_steps, cudaStream_t stream) {
  require(batch >= 0 && vocab >= 1 && max_steps >= 0, "whisper_greedy_step: need batch >= 0, vocab >= 1, max_steps >= 0, got ",
          batch, ", ", vocab, ", ", max_steps);
  require(n_suppress >= 0 && n_suppress_begin >= 0, "whisper_greedy_step: negative suppress list length");
  require(n_suppress == 0 || suppress != nullptr, "whisper_greedy_step: suppress is null");
  require(n_suppress_begin == 0 || suppress_begin != nullptr, "whisper_greedy_step: suppress_begin is null");
  if (p.timestamps)
    require(p.eot >= 0 && p.eot < p.timestamp_begin && p.timestamp_begin <= p.timestamp_end &&
                p.timestamp_end < vocab && p.no_timestamps >= 0 && p.no_timestamps < vocab,
            "whisper_greedy_step: need 0 <= eot < timestamp_begin <= timestamp_end < vocab and no_timestamps in "
            "[0, vocab), got eot ", p.eot, ", timestamp_begin ", p.timestamp_begin, ", timestamp_end ",
            p.timestamp_end, ", no_timestamps ", p.no_timestamps, ", vocab ", vocab);
  if (batch == 0) return;
  require(logits && step && next_token && token_logprob && (generated || max_steps == 0),
          "whisper_greedy_step: null pointer");
  if (uniform == nullptr) {
    whisper_pick_kernel<false><<<static_cast<unsigned>(batch), kThreads, 0, stream>>>(
        logits, generated, rows, append, step, suppress, n_suppress, suppress_begin, n_suppress_begin, p, nullptr, 0.0f,
        next_token, token_logprob, vocab, max_steps);
    SC_CUDA_CHECK_LAUNCH("whisper_greedy_step");
  } else {
    require(temperature > 0.0f && isfinite(temperature), "whisper_sample_step: temperature must be finite and > 0, got ",
            temperature);
    whisper_pick_kernel<true><<<static_cast<unsigned>(batch), kThreads, 0, stream>>>(
        logits, generated, rows, append, step, suppress, n_suppress, suppress_begin, n_suppress_begin, p, uniform,
        1.0f / temperature, next_token, token_logprob, vocab, max_steps);
    SC_CUDA_CHECK_LAUNCH("whisper_sample_step");
  }
}

}  // namespace

void whisper_greedy_step(float* logits, int32_t* generated, const int32_t* rows, bool append, const int32_t* step,
                         const int32_t* suppress, int n_suppress, const int32_t* suppress_begin, int n_suppress_begin,
                         const WhisperRuleParams& p, int32_t* next_token, float* token_logprob, int batch, int vocab,
                         int max_steps, cudaStream_t stream) {
  pick_step(logits, generated, rows, append, step, suppress, n_suppress, suppress_begin, n_suppress_begin, p, nullptr,
            0.0f, next_token, token_logprob, batch, vocab, max_steps, stream);
}

void whisper_sample_step(float* logits, int32_t* generated, const int32_t* rows, bool append, const int32_t* step,
                         const int32_t* suppress, int n_suppress, const int32_t* suppress_begin, int n_suppress_begin,
                         const WhisperRuleParams& p, const double* uniform, float temperature, int32_t* next_token,
                         float* token_logprob, int batch, int vocab, int max_steps, cudaStream_t stream) {
  require(batch == 0 || uniform != nullptr, "whisper_sample_step: uniform is null");
  pick_step(logits, generated, rows, append, step, suppress, n_suppress, suppress_begin, n_suppress_begin, p, uniform,
            temperature, next_token, token_logprob, batch, vocab, max_steps, stream);
}

void no_speech_prob(const float* logits, int batch, int vocab, int no_speech_id, float* out, cudaStream_t stream) {
  require(batch >= 0 && vocab >= 1 && no_speech_id >= 0 && no_speech_id < vocab,
          "no_speech_prob: need batch >= 0, vocab >= 1, 0 <= no_speech_id < vocab, got ", batch, ", ", vocab, ", ",
          no_speech_id);
  if (batch == 0) return;
  require(logits && out, "no_speech_prob: null pointer");
  no_speech_kernel<<<static_cast<unsigned>(batch), kThreads, 0, stream>>>(logits, vocab, no_speech_id, out);
  SC_CUDA_CHECK_LAUNCH("no_speech_prob");
}

}  // namespace speechcore::cuda
