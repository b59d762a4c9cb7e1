// Dtype conversion to float32 on the CPU (single-threaded; the loops vectorize).
#pragma once

#include <cstddef>

#include "speechcore/tensor.h"

namespace speechcore::core {

// Converts `n` elements of a float dtype (float32/float16/bfloat16) at `src` to float32 at `dst`.
// `src` may have any alignment (checkpoint data often sits at odd file offsets); `dst` is a float
// array. Error(kInvalidArgument) for a non-float dtype.
void convert_to_float32(const void* src, DType dtype, size_t n, float* dst);

// A new contiguous float32 CPU tensor with the values of `t` (any float dtype, any strides;
// a float32 input is copied). Error(kInvalidArgument) for integer tensors or non-CPU tensors.
Tensor to_float32(const Tensor& t);

}  // namespace speechcore::core
