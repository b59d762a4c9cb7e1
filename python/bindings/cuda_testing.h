// Test hooks for CUDA kernels (included only by *_cuda.cc binding files): numpy float32
// arrays go to the device in a chosen element type and come back as float32, so pytest can
// compare every kernel with its CPU twin / numpy across float32, float16 and bfloat16.
#pragma once

#include <cuda_runtime_api.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstring>
#include <string>
#include <vector>

#include "core/half.h"
#include "core/status.h"
#include "speechcore_cuda/common.h"

namespace speechcore::bindings::cudatest {

namespace py = pybind11;
using FloatArray = py::array_t<float, py::array::c_style | py::array::forcecast>;
using IntArray = py::array_t<int32_t, py::array::c_style | py::array::forcecast>;
using Int64Array = py::array_t<int64_t, py::array::c_style | py::array::forcecast>;

inline cuda::DataType parse_dtype(const std::string& s) {
  if (s == "float32") return cuda::DataType::kFloat32;
  if (s == "float16") return cuda::DataType::kFloat16;
  if (s == "bfloat16") return cuda::DataType::kBFloat16;
  throw_error(ErrorCode::kInvalidArgument, "dtype must be float32, float16 or bfloat16, got '", s, "'");
}

// Owns a device allocation (cudaMalloc/cudaFree); move-only.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t bytes) : bytes_(bytes) {
    if (bytes > 0) SC_CUDA_CHECK(cudaMalloc(&ptr_, bytes));
  }
  ~DeviceBuffer() {
    if (ptr_) cudaFree(ptr_);
  }
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(o.ptr_), bytes_(o.bytes_) { o.ptr_ = nullptr; o.bytes_ = 0; }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    std::swap(ptr_, o.ptr_);
    std::swap(bytes_, o.bytes_);
    return *this;
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  void* get() const { return ptr_; }
  template <typename T> T* as() const { return static_cast<T*>(ptr_); }
  size_t bytes() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

// Host float32 -> device buffer of type t (rounded to nearest even for the half types).
inline DeviceBuffer upload(const FloatArray& a, cuda::DataType t) {
  const size_t n = static_cast<size_t>(a.size());
  DeviceBuffer buf(n * cuda::data_type_size(t));
  if (n == 0) return buf;
  if (t == cuda::DataType::kFloat32) {
    SC_CUDA_CHECK(cudaMemcpy(buf.get(), a.data(), n * 4, cudaMemcpyHostToDevice));
  } else {
    std::vector<uint16_t> h(n);
    for (size_t i = 0; i < n; ++i)
      h[i] = t == cuda::DataType::kFloat16 ? core::float_to_half(a.data()[i]) : core::float_to_bf16(a.data()[i]);
    SC_CUDA_CHECK(cudaMemcpy(buf.get(), h.data(), n * 2, cudaMemcpyHostToDevice));
  }
  return buf;
}

inline DeviceBuffer upload_ints(const IntArray& a) {
  DeviceBuffer buf(static_cast<size_t>(a.size()) * 4);
  if (a.size() > 0) SC_CUDA_CHECK(cudaMemcpy(buf.get(), a.data(), a.size() * 4, cudaMemcpyHostToDevice));
  return buf;
}

inline DeviceBuffer upload_int64(const Int64Array& a) {
  DeviceBuffer buf(static_cast<size_t>(a.size()) * 8);
  if (a.size() > 0) SC_CUDA_CHECK(cudaMemcpy(buf.get(), a.data(), a.size() * 8, cudaMemcpyHostToDevice));
  return buf;
}

// A buffer of n elements of type t filled with NaN bit patterns, so unwritten outputs show.
inline DeviceBuffer poisoned(size_t n, cuda::DataType t) {
  DeviceBuffer buf(n * cuda::data_type_size(t));
  if (n > 0) SC_CUDA_CHECK(cudaMemset(buf.get(), 0xFF, buf.bytes()));
  return buf;
}

// Synchronizes, then device buffer of type t -> host float32 array of `shape`.
inline py::array_t<float> download(const DeviceBuffer& buf, const std::vector<py::ssize_t>& shape,
                                   cuda::DataType t) {
  SC_CUDA_CHECK(cudaDeviceSynchronize());
  py::array_t<float> out(shape);
  const size_t n = static_cast<size_t>(out.size());
  if (n == 0) return out;
  float* dst = out.mutable_data();
  if (t == cuda::DataType::kFloat32) {
    SC_CUDA_CHECK(cudaMemcpy(dst, buf.get(), n * 4, cudaMemcpyDeviceToHost));
  } else {
    std::vector<uint16_t> h(n);
    SC_CUDA_CHECK(cudaMemcpy(h.data(), buf.get(), n * 2, cudaMemcpyDeviceToHost));
    for (size_t i = 0; i < n; ++i)
      dst[i] = t == cuda::DataType::kFloat16 ? core::half_to_float(h[i]) : core::bf16_to_float(h[i]);
  }
  return out;
}

// Synchronizes, then the device buffer's integers (as stored) -> host array of `shape`.
template <typename I>
inline py::array_t<I> download_integers(const DeviceBuffer& buf, const std::vector<py::ssize_t>& shape) {
  SC_CUDA_CHECK(cudaDeviceSynchronize());
  py::array_t<I> out(shape);
  if (out.size() > 0)
    SC_CUDA_CHECK(cudaMemcpy(out.mutable_data(), buf.get(), out.size() * sizeof(I), cudaMemcpyDeviceToHost));
  return out;
}
inline py::array_t<int32_t> download_ints(const DeviceBuffer& buf, const std::vector<py::ssize_t>& shape) {
  return download_integers<int32_t>(buf, shape);
}
inline py::array_t<int64_t> download_int64(const DeviceBuffer& buf, const std::vector<py::ssize_t>& shape) {
  return download_integers<int64_t>(buf, shape);
}

}  // namespace speechcore::bindings::cudatest
