#include <string>

#include "speechcore/status.h"
#include "speechcore_cuda/common.h"

namespace speechcore::cuda {

const char* data_type_name(DataType t) {
  switch (t) {
    case DataType::kFloat32: return "float32";
    case DataType::kFloat16: return "float16";
    case DataType::kBFloat16: return "bfloat16";
  }
  return "?";
}

size_t data_type_size(DataType t) { return t == DataType::kFloat32 ? 4 : 2; }

void check(cudaError_t status, const char* what, const char* file, int line) {
  if (status == cudaSuccess) return;
  const std::string msg = std::string("CUDA error ") + cudaGetErrorName(status) + " (" +
                          cudaGetErrorString(status) + ") in " + what + " at " + file + ":" + std::to_string(line);
  cudaGetLastError();  // clear a sticky-free error so later calls are not blamed for it
  ErrorCode code = ErrorCode::kInternal;
  if (status == cudaErrorMemoryAllocation) code = ErrorCode::kOutOfMemory;
  if (status == cudaErrorNoDevice || status == cudaErrorInsufficientDriver) code = ErrorCode::kUnsupported;
  throw Error(code, msg);
}

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
}

}  // namespace speechcore::cuda
