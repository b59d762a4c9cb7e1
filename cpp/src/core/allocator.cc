#include "core/allocator.h"

#include <cstdlib>
#include <new>

#include "core/status.h"

namespace speechcore::core {

namespace {
constexpr size_t kAlignment = 64;
constexpr size_t kMiB = size_t(1) << 20;
}  // namespace

namespace {
void* host_raw_allocate(size_t bytes) { return std::aligned_alloc(kAlignment, bytes); }
void host_raw_free(void* p) { std::free(p); }
}  // namespace

HostCachingAllocator::HostCachingAllocator(size_t max_cached_bytes)
    : CachingAllocator(Device::kCPU, host_raw_allocate, host_raw_free, max_cached_bytes) {}

CachingAllocator::CachingAllocator(Device device, RawAllocate raw_allocate, RawFree raw_free, size_t max_cached_bytes)
    : device_(device), raw_allocate_(raw_allocate), raw_free_(raw_free), max_cached_bytes_(max_cached_bytes) {}

CachingAllocator::~CachingAllocator() {
  clear_cache();
  // Blocks still live belong to tensors that outlive the allocator (static teardown);
  // leave them to the OS rather than freeing memory that may still be read.
}

size_t CachingAllocator::size_class(size_t bytes) {
  if (bytes <= kAlignment) return kAlignment;
  if (bytes <= kMiB) {
    size_t c = kAlignment;
    while (c < bytes) c <<= 1;
    return c;
  }
  return (bytes + kMiB - 1) / kMiB * kMiB;
}

void CachingAllocator::release_cache_locked() {
  for (auto& kv : cache_)
    for (void* p : kv.second) raw_free_(p);
  cache_.clear();
  stats_.bytes_cached = 0;
}

void* CachingAllocator::allocate(size_t bytes) {
  const size_t cls = size_class(bytes == 0 ? 1 : bytes);
  std::lock_guard<std::mutex> lock(mutex_);
  ++stats_.num_allocs;
  void* ptr = nullptr;
  auto it = cache_.find(cls);
  if (it != cache_.end() && !it->second.empty()) {
    ptr = it->second.back();
    it->second.pop_back();
    stats_.bytes_cached -= cls;
    ++stats_.num_cache_hits;
  } else {
    ptr = raw_allocate_(cls);
    if (ptr == nullptr) {  // give the cached blocks back and try once more
      release_cache_locked();
      ptr = raw_allocate_(cls);
      if (ptr == nullptr)
        throw_error(ErrorCode::kOutOfMemory, device_name(device_), " allocation of ", cls, " bytes failed (",
                    stats_.bytes_in_use, " bytes in use)");
    }
    ++stats_.num_system_allocs;
  }
  live_[ptr] = cls;
  stats_.bytes_in_use += cls;
  if (stats_.bytes_in_use > stats_.peak_bytes_in_use) stats_.peak_bytes_in_use = stats_.bytes_in_use;
  return ptr;
}

void CachingAllocator::free(void* ptr) {
  if (ptr == nullptr) return;
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = live_.find(ptr);
  SC_ASSERT(it != live_.end());
  const size_t cls = it->second;
  live_.erase(it);
  stats_.bytes_in_use -= cls;
  if (stats_.bytes_cached + cls <= max_cached_bytes_) {
    cache_[cls].push_back(ptr);
    stats_.bytes_cached += cls;
  } else {
    raw_free_(ptr);
  }
}

void CachingAllocator::clear_cache() {
  std::lock_guard<std::mutex> lock(mutex_);
  release_cache_locked();
}

void CachingAllocator::reset_peak() {
  std::lock_guard<std::mutex> lock(mutex_);
  stats_.peak_bytes_in_use = stats_.bytes_in_use;
}

AllocatorStats CachingAllocator::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return stats_;
}

#ifdef SPEECHCORE_WITH_CUDA
Allocator& cuda_allocator();  // allocator_cuda.cc
#endif

Allocator& default_allocator(Device device) {
#ifdef SPEECHCORE_WITH_CUDA
  if (device == Device::kCUDA) return cuda_allocator();
#endif
  SC_CHECK(device == Device::kCPU, ErrorCode::kUnsupported,
           "no allocator for device '", device_name(device), "' in this build");
  static HostCachingAllocator* host = new HostCachingAllocator();  // never destroyed: tensors may outlive statics
  return *host;
}

}  // namespace speechcore::core
