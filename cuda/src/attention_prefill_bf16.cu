// attention_prefill kernels for one element type (both head sizes): its own translation unit.
#include "attention_kernels.cuh"

SC_ATTENTION_INSTANTIATE_PREFILL(__nv_bfloat16)
