#include "speechcore/tensor.h"

#include <cstring>
#include <sstream>

#include "core/allocator.h"
#include "core/status.h"

namespace speechcore {

size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::kFloat32: case DType::kInt32: return 4;
    case DType::kFloat16: case DType::kBFloat16: case DType::kInt16: return 2;
    case DType::kInt8: case DType::kUInt8: return 1;
  }
  return 0;
}

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::kFloat32: return "float32";
    case DType::kFloat16: return "float16";
    case DType::kBFloat16: return "bfloat16";
    case DType::kInt32: return "int32";
    case DType::kInt16: return "int16";
    case DType::kInt8: return "int8";
    case DType::kUInt8: return "uint8";
  }
  return "?";
}

const char* device_name(Device device) { return device == Device::kCPU ? "cpu" : "cuda"; }

std::string shape_str(const Shape& shape) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < shape.size(); ++i) os << (i ? ", " : "") << shape[i];
  os << "]";
  return os.str();
}

static std::vector<int64_t> contiguous_strides(const Shape& shape) {
  std::vector<int64_t> strides(shape.size());
  int64_t s = 1;
  for (int i = static_cast<int>(shape.size()) - 1; i >= 0; --i) {
    strides[i] = s;
    s *= shape[i];
  }
  return strides;
}

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  for (int64_t d : shape)
    SC_CHECK(d >= 0, ErrorCode::kInvalidArgument, "negative dimension in shape ", shape_str(shape));
  Tensor t;
  t.shape_ = shape;
  t.strides_ = contiguous_strides(shape);
  t.dtype_ = dtype;
  t.device_ = device;
  t.defined_ = true;
  core::Allocator* alloc = &core::default_allocator(device);
  void* ptr = alloc->allocate(t.nbytes());
  t.data_ = ptr;
  t.owner_ = std::shared_ptr<void>(ptr, [alloc](void* p) { alloc->free(p); });
  return t;
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  SC_CHECK(device == Device::kCPU, ErrorCode::kUnsupported, "zeros on ", device_name(device));
  std::memset(t.data_, 0, t.nbytes());
  return t;
}

Tensor Tensor::view(void* data, const Shape& shape, DType dtype, Device device,
                    std::shared_ptr<void> owner) {
  Tensor t;
  t.data_ = data;
  t.owner_ = std::move(owner);
  t.shape_ = shape;
  t.strides_ = contiguous_strides(shape);
  t.dtype_ = dtype;
  t.device_ = device;
  t.defined_ = true;
  return t;
}

int64_t Tensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape_) n *= d;
  return n;
}

bool Tensor::is_contiguous() const { return strides_ == contiguous_strides(shape_); }

Tensor Tensor::reshape(const Shape& shape) const {
  SC_ASSERT(is_contiguous());
  Shape out = shape;
  int infer = -1;
  int64_t known = 1;
  for (size_t i = 0; i < out.size(); ++i) {
    if (out[i] == -1) {
      SC_ASSERT(infer < 0);
      infer = static_cast<int>(i);
    } else {
      known *= out[i];
    }
  }
  if (infer >= 0) out[infer] = known == 0 ? 0 : numel() / known;
  int64_t n = 1;
  for (int64_t d : out) n *= d;
  SC_CHECK(n == numel(), ErrorCode::kInternal, "cannot reshape ", shape_str(shape_), " to ",
           shape_str(shape));
  Tensor t = *this;
  t.shape_ = out;
  t.strides_ = contiguous_strides(out);
  return t;
}

Tensor Tensor::narrow(int dim, int64_t start, int64_t length) const {
  if (dim < 0) dim += rank();
  SC_ASSERT(dim >= 0 && dim < rank());
  SC_ASSERT(start >= 0 && length >= 0 && start + length <= shape_[dim]);
  Tensor t = *this;
  t.shape_[dim] = length;
  t.data_ = static_cast<char*>(data_) + start * strides_[dim] * static_cast<int64_t>(dtype_size(dtype_));
  return t;
}

Tensor Tensor::select(int64_t index) const {
  SC_ASSERT(rank() >= 1 && index >= 0 && index < shape_[0]);
  Tensor t = narrow(0, index, 1);
  t.shape_.erase(t.shape_.begin());
  t.strides_.erase(t.strides_.begin());
  return t;
}

Tensor Tensor::clone() const {
  SC_CHECK(device_ == Device::kCPU, ErrorCode::kUnsupported, "clone on ", device_name(device_));
  Tensor out = empty(shape_, dtype_, device_);
  if (is_contiguous()) {
    std::memcpy(out.data_, data_, nbytes());
    return out;
  }
  // Generic strided copy, element by element.
  const size_t es = dtype_size(dtype_);
  const int64_t n = numel();
  std::vector<int64_t> idx(shape_.size(), 0);
  char* dst = static_cast<char*>(out.data_);
  for (int64_t i = 0; i < n; ++i) {
    int64_t off = 0;
    for (size_t d = 0; d < idx.size(); ++d) off += idx[d] * strides_[d];
    std::memcpy(dst + i * es, static_cast<const char*>(data_) + off * static_cast<int64_t>(es), es);
    for (int d = static_cast<int>(idx.size()) - 1; d >= 0; --d) {
      if (++idx[d] < shape_[d]) break;
      idx[d] = 0;
    }
  }
  return out;
}

std::string Tensor::to_string() const {
  std::ostringstream os;
  os << "Tensor(" << dtype_name(dtype_) << ", " << shape_str(shape_) << ", " << device_name(device_) << ")";
  return os.str();
}

}  // namespace speechcore
