// Per-step scratch arena: bump allocation from one buffer, released all at once by reset().
// Kernels take scratch from here instead of allocating. When a step needs more than the
// buffer holds, overflow chunks are taken from the allocator and, at the next reset(), the
// buffer grows to the high-water mark so later steps fit in one block.
#pragma once

#include <cstddef>
#include <vector>

#include "core/allocator.h"
#include "speechcore/tensor.h"

namespace speechcore::core {

class Workspace {
 public:
  explicit Workspace(Allocator& allocator, size_t initial_bytes = 0);
  ~Workspace();
  Workspace(const Workspace&) = delete;
  Workspace& operator=(const Workspace&) = delete;

  void* allocate(size_t bytes);  // 64-byte aligned, valid until reset()
  Tensor tensor(const Shape& shape, DType dtype);  // a view into the arena
  void reset();

  size_t capacity() const { return capacity_; }
  size_t used() const { return used_; }
  size_t high_water() const { return high_water_; }

 private:
  Allocator& allocator_;
  char* buffer_ = nullptr;
  size_t capacity_ = 0;
  size_t used_ = 0;       // bytes used in buffer_ + overflow this step
  size_t high_water_ = 0;
  std::vector<void*> overflow_;
};

}  // namespace speechcore::core
