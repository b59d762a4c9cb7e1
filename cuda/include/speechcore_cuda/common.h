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

}  // namespace speechcore::cuda

#define SC_CUDA_CHECK(expr) ::speechcore::cuda::check((expr), #expr, __FILE__, __LINE__)
// After a kernel launch: launch-configuration errors and earlier asynchronous faults.
#define SC_CUDA_CHECK_LAUNCH(name) ::speechcore::cuda::check(cudaGetLastError(), name, __FILE__, __LINE__)
