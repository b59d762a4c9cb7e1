// Shared definitions of the CUDA backend: element types, error checking, devices.
// Launchers take raw device pointers and a stream; this header is includable from plain .cc
// files (it needs only the CUDA runtime API header).
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace speechcore::cuda {

// Element types of activations and weights on the device. Accumulation is always float32.
enum class DataType : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };

const char* data_type_name(DataType t);
size_t data_type_size(DataType t);

// Throws speechcore::Error: kOutOfMemory for cudaErrorMemoryAllocation, kUnsupported when no
// device/driver is usable, kInternal otherwise; the message names the call and the location.
void check(cudaError_t status, const char* what, const char* file, int line);

// Number of usable CUDA devices; 0 (no exception) when there is no driver or no device.
int device_count();

// A residual row kept partly as int64 fixed-point sums: one-row decode steps whose attention
// kernels also compute their output products (OutputFold, attention.h) add each head's partial
// product to acc atomically; integer sums do not depend on the order of the additions, so the
// result is deterministic. A kernel that reads the residual through these terms reads
//   x_t = round(acc_t[c] * 2^-kResidualFracBits + bias_t[c] + x_{t-1}[c]),  t = 1..terms,
// x_0 = x (gemv()'s epilogue order: the product plus its bias, then the residual, one rounding
// to the model's type), i.e. the residual the sub-layers would have written one after another.
// Partials are clamped to +-kResidualClamp; a non-finite partial adds kResidualNonFinite, and a
// sum of magnitude >= kResidualNonFinite / 2 reads as NaN.
constexpr int kResidualFracBits = 32;
constexpr float kResidualClamp = 1.0e6f;  // * 2^32 < 2^52: 32 heads' partials stay below 2^57
constexpr int64_t kResidualNonFinite = int64_t(1) << 58;
struct ResidualTerms {
  int64_t* acc[2] = {nullptr, nullptr};      // [rows, d] each, zero before the first partial
  const void* bias[2] = {nullptr, nullptr};  // [d] of the model's type, or null
  int terms = 0;                             // 0, 1 or 2
  // gemv() with accumulate: the thread that reads column c of the accumulators zeroes them, so
  // they are zero again for the next layer (the step's last reader of the terms).
  bool zero = false;
};

}  // namespace speechcore::cuda

#define SC_CUDA_CHECK(expr) ::speechcore::cuda::check((expr), #expr, __FILE__, __LINE__)
// After a kernel launch: launch-configuration errors and earlier asynchronous faults.
#define SC_CUDA_CHECK_LAUNCH(name) ::speechcore::cuda::check(cudaGetLastError(), name, __FILE__, __LINE__)
