#include "core/convert.h"

#include <cstdint>
#include <cstring>

#include "core/status.h"

namespace speechcore::core {

namespace {

inline uint16_t load_u16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);  // a plain (unaligned-safe) load
  return v;
}

inline float bits_to_float(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// IEEE half -> float without data-dependent loops, so the caller's loop vectorizes.
// Normal numbers: move exponent and mantissa into place and rebias the exponent by 112.
// Inf/NaN (exponent 31): rebias once more so the float exponent is all ones.
// Zero/subnormal (exponent 0): the shifted mantissa is m * 2^-24 once read as a float with
// exponent 113 minus 2^-14 (= bits 113 << 23); the subtraction does the normalization.
inline float half_bits_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t em = static_cast<uint32_t>(h & 0x7fffu) << 13;  // exponent+mantissa, float position
  const uint32_t exp = em & (0x1fu << 23);
  const uint32_t rebiased = em + (112u << 23);
  const float normal = bits_to_float(exp == (0x1fu << 23) ? rebiased + (112u << 23) : rebiased);
  const float sub = bits_to_float(em + (113u << 23)) - bits_to_float(113u << 23);
  const float mag = exp == 0 ? sub : normal;
  uint32_t bits;
  std::memcpy(&bits, &mag, 4);
  return bits_to_float(bits | sign);
}

void half_to_float_n(const uint8_t* src, size_t n, float* dst) {
  for (size_t i = 0; i < n; ++i) dst[i] = half_bits_to_float(load_u16(src + 2 * i));
}

void bf16_to_float_n(const uint8_t* src, size_t n, float* dst) {
  for (size_t i = 0; i < n; ++i) dst[i] = bits_to_float(static_cast<uint32_t>(load_u16(src + 2 * i)) << 16);
}

}  // namespace

void convert_to_float32(const void* src, DType dtype, size_t n, float* dst) {
  const auto* bytes = static_cast<const uint8_t*>(src);
  switch (dtype) {
    case DType::kFloat32:
      if (n > 0) std::memcpy(dst, src, n * sizeof(float));
      return;
    case DType::kFloat16:
      half_to_float_n(bytes, n, dst);
      return;
    case DType::kBFloat16:
      bf16_to_float_n(bytes, n, dst);
      return;
    default:
      throw_error(ErrorCode::kInvalidArgument, "cannot convert ", dtype_name(dtype),
                  " to float32: not a float dtype");
  }
}

Tensor to_float32(const Tensor& t) {
  SC_CHECK(t.defined(), ErrorCode::kInvalidArgument, "to_float32: undefined tensor");
  SC_CHECK(t.device() == Device::kCPU, ErrorCode::kInvalidArgument, "to_float32: ",
           t.to_string(), " is not on the CPU");
  SC_CHECK(t.dtype() == DType::kFloat32 || t.dtype() == DType::kFloat16 ||
               t.dtype() == DType::kBFloat16,
           ErrorCode::kInvalidArgument, "to_float32: ", t.to_string(), " is not a float tensor");
  const Tensor src = t.is_contiguous() ? t : t.clone();
  Tensor out = Tensor::empty(src.shape(), DType::kFloat32);
  convert_to_float32(src.raw(), src.dtype(), static_cast<size_t>(src.numel()), out.data<float>());
  return out;
}

}  // namespace speechcore::core
