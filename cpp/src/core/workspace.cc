#include "core/workspace.h"

namespace speechcore::core {

namespace {
constexpr size_t kAlign = 64;
size_t align_up(size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }
}  // namespace

Workspace::Workspace(Allocator& allocator, size_t initial_bytes) : allocator_(allocator) {
  if (initial_bytes > 0) {
    capacity_ = align_up(initial_bytes);
    buffer_ = static_cast<char*>(allocator_.allocate(capacity_));
  }
}

Workspace::~Workspace() {
  for (void* p : overflow_) allocator_.free(p);
  if (buffer_) allocator_.free(buffer_);
}

void* Workspace::allocate(size_t bytes) {
  const size_t n = align_up(bytes == 0 ? 1 : bytes);
  void* out;
  if (used_ + n <= capacity_) {
    out = buffer_ + used_;
  } else {
    out = allocator_.allocate(n);
    overflow_.push_back(out);
  }
  used_ += n;
  if (used_ > high_water_) high_water_ = used_;
  return out;
}

Tensor Workspace::tensor(const Shape& shape, DType dtype) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return Tensor::view(allocate(static_cast<size_t>(n) * dtype_size(dtype)), shape, dtype,
                      allocator_.device());
}

void Workspace::reset() {
  for (void* p : overflow_) allocator_.free(p);
  const bool grow = !overflow_.empty();
  overflow_.clear();
  used_ = 0;
  if (grow && high_water_ > capacity_) {
    if (buffer_) allocator_.free(buffer_);
    capacity_ = align_up(high_water_);
    buffer_ = static_cast<char*>(allocator_.allocate(capacity_));
  }
}

}  // namespace speechcore::core
