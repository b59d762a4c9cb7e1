#include "core/convert.h"

#include <cstring>

#include "core/half.h"
#include "core/status.h"

namespace speechcore::core {

Tensor to_float32(const Tensor& src) {
  SC_CHECK(src.device() == Device::kCPU, ErrorCode::kUnsupported, "to_float32 on ", device_name(src.device()));
  const Tensor t = src.is_contiguous() ? src : src.clone();
  Tensor out = Tensor::empty(t.shape(), DType::kFloat32);
  const int64_t n = t.numel();
  float* dst = out.data<float>();
  switch (t.dtype()) {
    case DType::kFloat32:
      std::memcpy(dst, t.raw(), t.nbytes());
      break;
    case DType::kFloat16: {
      const uint16_t* s = t.data<uint16_t>();
      for (int64_t i = 0; i < n; ++i) dst[i] = half_to_float(s[i]);
      break;
    }
    case DType::kBFloat16: {
      const uint16_t* s = t.data<uint16_t>();
      for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_float(s[i]);
      break;
    }
    default:
      throw_error(ErrorCode::kInvalidArgument, "to_float32: cannot convert ", dtype_name(t.dtype()));
  }
  return out;
}

}  // namespace speechcore::core
