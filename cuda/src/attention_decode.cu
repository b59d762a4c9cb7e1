// attention_decode kernels (split-K decode + combine) for all element types and head sizes.
#include "attention_kernels.cuh"

SC_ATTENTION_INSTANTIATE_DECODE(float)
SC_ATTENTION_INSTANTIATE_DECODE(__half)
SC_ATTENTION_INSTANTIATE_DECODE(__nv_bfloat16)
