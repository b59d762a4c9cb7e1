// dtype conversion of whole tensors (CPU).
#pragma once

#include "speechcore/tensor.h"

namespace speechcore::core {

// A new contiguous float32 tensor with the values of a float32/float16/bfloat16 tensor.
Tensor to_float32(const Tensor& t);

}  // namespace speechcore::core
