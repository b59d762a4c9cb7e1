#include "bindings.h"

PYBIND11_MODULE(_C, m) {
  m.doc() = "speechcore native core (C++). Use the `speechcore` package, not this module.";
  m.attr("__version__") = "0.1.0";
  speechcore::bindings::register_errors(m);
  speechcore::bindings::register_core(m);
  speechcore::bindings::register_model(m);
  speechcore::bindings::register_engine(m);
  speechcore::bindings::register_ops(m);
  speechcore::bindings::register_checkpoint(m);
  speechcore::bindings::register_tokenizer(m);
  speechcore::bindings::register_audio(m);
  speechcore::bindings::register_vad(m);
#ifdef SPEECHCORE_WITH_CUDA
  // CUDA kernel test hooks: submodule _C.cuda_ops (one register_* per *_cuda.cc file)
  pybind11::module_ cuda_ops = m.def_submodule("cuda_ops", "CUDA kernels (test hooks)");
  speechcore::bindings::register_cuda_gemm(cuda_ops);
  speechcore::bindings::register_cuda_attention(cuda_ops);
  speechcore::bindings::register_cuda_kernels(cuda_ops);
#endif
}
