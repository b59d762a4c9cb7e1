// Device memory: the caching pool over cudaMalloc on the current device. Freed blocks stay
// cached (no cudaFree/cudaMalloc in steady state); clear_cache() returns them to the driver.
#include <cuda_runtime_api.h>

#include "core/allocator.h"

namespace speechcore::core {

namespace {
void* cuda_raw_allocate(size_t bytes) {
  void* p = nullptr;
  if (cudaMalloc(&p, bytes) != cudaSuccess) {
    cudaGetLastError();  // clear the error: the caller retries or reports kOutOfMemory
    return nullptr;
  }
  return p;
}
void cuda_raw_free(void* p) { cudaFree(p); }
}  // namespace

Allocator& cuda_allocator() {
  static CachingAllocator* pool =
      new CachingAllocator(Device::kCUDA, cuda_raw_allocate, cuda_raw_free, ~size_t(0));  // never destroyed
  return *pool;
}

}  // namespace speechcore::core
