// Allocators: allocate/free/clear_cache with usage statistics. The host caching pool keeps
// freed blocks in size classes and hands them out again, so steady-state decoding does not
// call malloc.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <vector>

#include "speechcore/tensor.h"

namespace speechcore::core {

struct AllocatorStats {
  size_t bytes_in_use = 0;       // handed out and not yet freed
  size_t peak_bytes_in_use = 0;
  size_t bytes_cached = 0;       // freed, kept for reuse
  uint64_t num_allocs = 0;       // allocate() calls
  uint64_t num_cache_hits = 0;   // allocate() calls served from the cache
  uint64_t num_system_allocs = 0;  // calls that reached the system allocator
};

class Allocator {
 public:
  virtual ~Allocator() = default;
  virtual void* allocate(size_t bytes) = 0;
  virtual void free(void* ptr) = 0;
  virtual void clear_cache() = 0;
  virtual void reset_peak() = 0;  // peak_bytes_in_use = bytes_in_use (to measure one phase)
  virtual AllocatorStats stats() const = 0;
  virtual Device device() const = 0;
};

// Caching pool over a raw allocator (host aligned_alloc, or cudaMalloc). Sizes are rounded to
// a size class (powers of two up to 1 MiB, then multiples of 1 MiB) and freed blocks are
// cached per class, up to `max_cached_bytes` in total; when the raw allocator fails, the cache
// is released and the allocation retried once before kOutOfMemory.
class CachingAllocator : public Allocator {
 public:
  using RawAllocate = void* (*)(size_t bytes);  // nullptr on failure
  using RawFree = void (*)(void* ptr);
  CachingAllocator(Device device, RawAllocate raw_allocate, RawFree raw_free, size_t max_cached_bytes);
  ~CachingAllocator() override;
  void* allocate(size_t bytes) override;
  void free(void* ptr) override;
  void clear_cache() override;
  void reset_peak() override;
  AllocatorStats stats() const override;
  Device device() const override { return device_; }

  static size_t size_class(size_t bytes);

 private:
  void release_cache_locked();

  Device device_;
  RawAllocate raw_allocate_;
  RawFree raw_free_;
  mutable std::mutex mutex_;
  size_t max_cached_bytes_;
  std::map<size_t, std::vector<void*>> cache_;  // size class -> free blocks
  std::map<void*, size_t> live_;                // block -> size class
  AllocatorStats stats_;
};

// Host memory, 64-byte aligned.
class HostCachingAllocator final : public CachingAllocator {
 public:
  explicit HostCachingAllocator(size_t max_cached_bytes = size_t(2) << 30);
};

// The process-wide allocator for a device (CPU only in this build).
Allocator& default_allocator(Device device);

}  // namespace speechcore::core
