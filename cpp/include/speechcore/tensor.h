// speechcore::Tensor: shape, strides, dtype and device over a buffer it owns or views.
// No math semantics: ops live in the library (see cpp/src/ops).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace speechcore {

enum class DType : uint8_t { kFloat32, kFloat16, kBFloat16, kInt32, kInt16, kInt8, kUInt8 };
enum class Device : uint8_t { kCPU, kCUDA };

size_t dtype_size(DType dtype);
const char* dtype_name(DType dtype);
const char* device_name(Device device);

using Shape = std::vector<int64_t>;
std::string shape_str(const Shape& shape);

class Tensor {
 public:
  Tensor() = default;
  // Allocates an uninitialized tensor from the default allocator of `device`.
  static Tensor empty(const Shape& shape, DType dtype, Device device = Device::kCPU);
  static Tensor zeros(const Shape& shape, DType dtype, Device device = Device::kCPU);
  // Views memory owned by someone else; `owner` keeps it alive (may be null for borrowed memory).
  static Tensor view(void* data, const Shape& shape, DType dtype, Device device = Device::kCPU,
                     std::shared_ptr<void> owner = nullptr);

  bool defined() const { return defined_; }
  const Shape& shape() const { return shape_; }
  const std::vector<int64_t>& strides() const { return strides_; }
  int rank() const { return static_cast<int>(shape_.size()); }
  int64_t dim(int i) const { return shape_.at(i < 0 ? i + rank() : i); }
  int64_t numel() const;
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype_); }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  bool is_contiguous() const;

  void* raw() { return data_; }
  const void* raw() const { return data_; }
  template <typename T> T* data() { return static_cast<T*>(data_); }
  template <typename T> const T* data() const { return static_cast<const T*>(data_); }

  // Views (share the buffer).
  Tensor reshape(const Shape& shape) const;               // contiguous tensors only
  Tensor narrow(int dim, int64_t start, int64_t length) const;  // a slice along one dim
  Tensor select(int64_t index) const;                     // index dim 0, drop it

  // A deep, contiguous copy.
  Tensor clone() const;
  std::string to_string() const;  // "Tensor(float32, [2, 3], cpu)"

 private:
  void* data_ = nullptr;
  std::shared_ptr<void> owner_;
  Shape shape_;
  std::vector<int64_t> strides_;
  DType dtype_ = DType::kFloat32;
  Device device_ = Device::kCPU;
  bool defined_ = false;
};

}  // namespace speechcore
