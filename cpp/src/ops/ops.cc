// Shape helpers of the CPU ops (the raw-pointer kernels trust their callers, the layers of
// this library; the test hooks in python/bindings/ops.cc check arguments first).
#include "ops/ops.h"

#include "core/status.h"

namespace speechcore::ops {

int64_t conv1d_output_length(int64_t t_in, int kw, int stride, int pad) {
  return (t_in + 2 * pad - kw) / stride + 1;
}

}  // namespace speechcore::ops
