// attention_prefill / attention_decode: argument validation, decode split policy, and the one
// switch from (dtype, head_dim) to kernel instantiations.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>
#include <cstdint>
#include <string>

#include "attention_internal.h"
#include "speechcore/status.h"
#include "speechcore_cuda/attention.h"

namespace speechcore::cuda {
namespace {

// Largest sequence length / key count we accept: row + causal offset stays inside int32.
constexpr int64_t kMaxLen = int64_t{1} << 30;

void require(bool ok, ErrorCode code, const char* fn, const std::string& what) {
  if (!ok) throw Error(code, std::string(fn) + ": " + what);
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// Pointer alignment and stride rules shared by both launchers (see attention.h).
void check_operand(const char* fn, const char* name, const void* ptr, int64_t ld, int64_t batch_stride,
                   int64_t width, int64_t vec) {
  const std::string n(name);
  require(ptr != nullptr, ErrorCode::kInvalidArgument, fn, n + " is null");
  require(aligned16(ptr), ErrorCode::kInvalidArgument, fn, n + " must be 16-byte aligned");
  require(ld >= width, ErrorCode::kInvalidArgument, fn,
          n + " row stride " + std::to_string(ld) + " < heads * head_dim = " + std::to_string(width));
  require(ld % vec == 0, ErrorCode::kInvalidArgument, fn,
          n + " row stride " + std::to_string(ld) + " must be a multiple of " + std::to_string(vec));
  require(batch_stride >= 0 && batch_stride % vec == 0, ErrorCode::kInvalidArgument, fn,
          n + " batch stride " + std::to_string(batch_stride) + " must be >= 0 and a multiple of " +
              std::to_string(vec));
}

void check_dtype(const char* fn, DataType dtype) {
  require(dtype == DataType::kFloat32 || dtype == DataType::kFloat16 || dtype == DataType::kBFloat16,
          ErrorCode::kInvalidArgument, fn, "unknown dtype");
}

void check_head_dim(const char* fn, int head_dim) {
  require(head_dim == 64 || head_dim == 128, ErrorCode::kUnsupported, fn,
          "head_dim " + std::to_string(head_dim) + " is not supported (64 or 128)");
}

// The one switch: (dtype, head_dim) -> kernel instantiation.
template <template <typename, int> class Fn, typename P>
void dispatch(const char* fn, DataType dtype, int head_dim, const P& p, int batch, int heads, cudaStream_t s) {
  switch (head_dim) {
    case 64:
      switch (dtype) {
        case DataType::kFloat32: return Fn<float, 64>::run(p, batch, heads, s);
        case DataType::kFloat16: return Fn<__half, 64>::run(p, batch, heads, s);
        case DataType::kBFloat16: return Fn<__nv_bfloat16, 64>::run(p, batch, heads, s);
      }
      break;
    case 128:
      switch (dtype) {
        case DataType::kFloat32: return Fn<float, 128>::run(p, batch, heads, s);
        case DataType::kFloat16: return Fn<__half, 128>::run(p, batch, heads, s);
        case DataType::kBFloat16: return Fn<__nv_bfloat16, 128>::run(p, batch, heads, s);
      }
      break;
    default: break;
  }
  throw Error(ErrorCode::kUnsupported, std::string(fn) + ": unsupported head_dim " + std::to_string(head_dim) +
                                           " / dtype " + data_type_name(dtype));
}

template <typename T, int D> struct PrefillFn {
  static void run(const attn::PrefillParams& p, int b, int h, cudaStream_t s) { attn::launch_prefill<T, D>(p, b, h, s); }
};
template <typename T, int D> struct DecodeFn {
  static void run(const attn::DecodeParams& p, int b, int h, cudaStream_t s) { attn::launch_decode<T, D>(p, b, h, s); }
};

}  // namespace

void attention_prefill(DataType dtype, const void* q, int64_t ldq, int64_t q_batch_stride,
                       const void* k, int64_t ldk, int64_t k_batch_stride,
                       const void* v, int64_t ldv, int64_t v_batch_stride,
                       void* out, int64_t ldo, int64_t out_batch_stride,
                       int batch, int64_t tq, int64_t tk, int heads, int head_dim,
                       int64_t causal_offset, cudaStream_t stream) {
  const char* fn = "attention_prefill";
  check_dtype(fn, dtype);
  check_head_dim(fn, head_dim);
  require(batch >= 0 && batch <= 65535, ErrorCode::kInvalidArgument, fn, "batch must be in [0, 65535]");
  require(heads >= 1 && heads <= 65535, ErrorCode::kInvalidArgument, fn, "heads must be in [1, 65535]");
  require(tq >= 0 && tq <= kMaxLen, ErrorCode::kInvalidArgument, fn, "tq out of range");
  require(tk >= 1 && tk <= kMaxLen, ErrorCode::kInvalidArgument, fn, "tk must be in [1, 2^30]");
  require(causal_offset >= -1, ErrorCode::kInvalidArgument, fn, "causal_offset must be >= -1");
  if (batch == 0 || tq == 0) return;
  const int64_t width = static_cast<int64_t>(heads) * head_dim;
  const int64_t vec = 16 / static_cast<int64_t>(data_type_size(dtype));
  check_operand(fn, "q", q, ldq, q_batch_stride, width, vec);
  check_operand(fn, "k", k, ldk, k_batch_stride, width, vec);
  check_operand(fn, "v", v, ldv, v_batch_stride, width, vec);
  check_operand(fn, "out", out, ldo, out_batch_stride, width, vec);

  attn::PrefillParams p{};
  p.q = q; p.k = k; p.v = v; p.out = out;
  p.ldq = ldq; p.ldk = ldk; p.ldv = ldv; p.ldo = ldo;
  p.q_bs = q_batch_stride; p.k_bs = k_batch_stride; p.v_bs = v_batch_stride; p.o_bs = out_batch_stride;
  p.tq = static_cast<int>(tq);
  p.tk = static_cast<int>(tk);
  // An offset that masks nothing (every key j <= tk - 1 <= i + offset) is the same as no mask.
  p.causal = causal_offset < 0 || causal_offset >= tk - 1 ? -1 : static_cast<int>(causal_offset);
  p.scale_log2 = static_cast<float>(1.4426950408889634 / std::sqrt(static_cast<double>(head_dim)));
  dispatch<PrefillFn>(fn, dtype, head_dim, p, batch, heads, stream);
}

AttentionDecodeSplit attention_decode_split(int batch, int heads, int64_t max_kv_len) {
  if (batch <= 0 || heads <= 0 || max_kv_len <= 0) return {1, max_kv_len > 0 ? max_kv_len : 1};
  const int64_t bh = static_cast<int64_t>(batch) * heads;
  const int64_t want = (attn::kDecodeTargetBlocks + bh - 1) / bh;
  const int64_t by_len = (max_kv_len + attn::kDecodeMinChunk - 1) / attn::kDecodeMinChunk;
  int64_t splits = want < by_len ? want : by_len;
  if (splits > attn::kDecodeMaxSplits) splits = attn::kDecodeMaxSplits;
  if (splits < 1) splits = 1;
  // Chunks are whole multiples of kDecodeMinChunk; recount so no split is empty for max_kv_len.
  int64_t chunk = (max_kv_len + splits - 1) / splits;
  chunk = (chunk + attn::kDecodeMinChunk - 1) / attn::kDecodeMinChunk * attn::kDecodeMinChunk;
  splits = (max_kv_len + chunk - 1) / chunk;
  return {static_cast<int>(splits), chunk};
}

size_t attention_decode_scratch_bytes(int batch, int heads, int head_dim, int64_t max_kv_len) {
  const AttentionDecodeSplit sp = attention_decode_split(batch, heads, max_kv_len);
  if (sp.splits <= 1 || head_dim <= 0) return 0;
  // merge counters (fixed region), partial outputs [batch, heads, splits, head_dim], then (max, sum)
  // pairs [batch, heads, splits, 2]
  return attn::kDecodeCounterBytes +
         sizeof(float) * static_cast<size_t>(batch) * heads * sp.splits * (static_cast<size_t>(head_dim) + 2);
}

void attention_decode_scratch_init(void* scratch, size_t bytes, cudaStream_t stream) {
  if (bytes == 0) return;
  require(scratch != nullptr, ErrorCode::kInvalidArgument, "attention_decode_scratch_init", "scratch is null");
  SC_CUDA_CHECK(cudaMemsetAsync(scratch, 0, bytes < attn::kDecodeCounterBytes ? bytes : attn::kDecodeCounterBytes,
                                stream));
}

void attention_decode(DataType dtype, const void* q, int64_t ldq, int64_t q_batch_stride,
                      const void* k, int64_t ldk, int64_t k_batch_stride,
                      const void* v, int64_t ldv, int64_t v_batch_stride,
                      void* out, int64_t ldo, int64_t out_batch_stride,
                      const int32_t* kv_lengths, const int32_t* kv_index, int batch, int heads, int head_dim,
                      int64_t max_kv_len, void* scratch, cudaStream_t stream, const PagedKV* paged,
                      bool kv_static) {
  const char* fn = "attention_decode";
  check_dtype(fn, dtype);
  check_head_dim(fn, head_dim);
  require(batch >= 0 && batch <= 65535, ErrorCode::kInvalidArgument, fn, "batch must be in [0, 65535]");
  require(heads >= 1 && heads <= 65535, ErrorCode::kInvalidArgument, fn, "heads must be in [1, 65535]");
  require(max_kv_len >= 1 && max_kv_len <= kMaxLen, ErrorCode::kInvalidArgument, fn,
          "max_kv_len must be in [1, 2^30]");
  if (batch == 0) return;
  const int64_t width = static_cast<int64_t>(heads) * head_dim;
  const int64_t vec = 16 / static_cast<int64_t>(data_type_size(dtype));
  check_operand(fn, "q", q, ldq, q_batch_stride, width, vec);
  const bool is_paged = paged != nullptr && paged->block_table != nullptr;
  // paged: the batch strides are ignored (validated as 0)
  check_operand(fn, "k", k, ldk, is_paged ? 0 : k_batch_stride, width, vec);
  check_operand(fn, "v", v, ldv, is_paged ? 0 : v_batch_stride, width, vec);
  check_operand(fn, "out", out, ldo, out_batch_stride, width, vec);
  require(kv_lengths != nullptr, ErrorCode::kInvalidArgument, fn, "kv_lengths is null");
  if (is_paged) {
    require(paged->block_size >= 1, ErrorCode::kInvalidArgument, fn,
            "paged block_size must be >= 1, got " + std::to_string(paged->block_size));
    const int64_t blocks = (max_kv_len + paged->block_size - 1) / paged->block_size;
    require(paged->table_stride >= blocks, ErrorCode::kInvalidArgument, fn,
            "paged table_stride " + std::to_string(paged->table_stride) + " < ceil(max_kv_len / block_size) = " +
                std::to_string(blocks));
  }

  const AttentionDecodeSplit sp = attention_decode_split(batch, heads, max_kv_len);
  attn::DecodeParams p{};
  p.q = q; p.k = k; p.v = v; p.out = out;
  p.ldk = ldk; p.ldv = ldv;
  p.q_bs = q_batch_stride; p.k_bs = k_batch_stride; p.v_bs = v_batch_stride; p.o_bs = out_batch_stride;
  p.kv_lengths = kv_lengths;
  p.kv_index = is_paged ? nullptr : kv_index;
  p.block_table = is_paged ? paged->block_table : nullptr;
  p.table_stride = is_paged ? paged->table_stride : 0;
  p.block_size = is_paged ? paged->block_size : 1;
  p.max_kv_len = static_cast<int>(max_kv_len);
  p.splits = sp.splits;
  p.chunk = static_cast<int>(sp.chunk);
  p.scale_log2 = static_cast<float>(1.4426950408889634 / std::sqrt(static_cast<double>(head_dim)));
  p.kv_static = kv_static && !is_paged;
  if (sp.splits > 1) {
    require(scratch != nullptr && aligned16(scratch), ErrorCode::kInvalidArgument, fn,
            "scratch must be non-null and 16-byte aligned (attention_decode_scratch_bytes)");
    require(static_cast<int64_t>(batch) * heads * sizeof(unsigned) <= attn::kDecodeCounterBytes, ErrorCode::kInternal,
            fn, "split policy exceeds the merge counters");
    p.counters = static_cast<unsigned*>(scratch);
    p.partial_o = reinterpret_cast<float*>(static_cast<char*>(scratch) + attn::kDecodeCounterBytes);
    p.partial_ml = p.partial_o + static_cast<size_t>(batch) * heads * sp.splits * head_dim;
  }
  dispatch<DecodeFn>(fn, dtype, head_dim, p, batch, heads, stream);
}

}  // namespace speechcore::cuda
