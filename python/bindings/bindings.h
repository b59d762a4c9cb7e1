// pybind11 registration functions, one per binding file; module.cc calls them all.
#pragma once

#include <pybind11/pybind11.h>

#include <string>

#include "core/status.h"

namespace speechcore::bindings {

// Argument check of the test hooks: kInvalidArgument (InvalidArgumentError) with `what`.
inline void need(bool cond, const std::string& what) {
  if (!cond) throw_error(ErrorCode::kInvalidArgument, what);
}

void register_errors(pybind11::module_& m);
void register_core(pybind11::module_& m);
void register_model(pybind11::module_& m);
void register_ops(pybind11::module_& m);
void register_checkpoint(pybind11::module_& m);
void register_tokenizer(pybind11::module_& m);
void register_audio(pybind11::module_& m);

#ifdef SPEECHCORE_WITH_CUDA
void register_cuda_gemm(pybind11::module_& m);
void register_cuda_attention(pybind11::module_& m);
void register_cuda_kernels(pybind11::module_& m);
#endif

}  // namespace speechcore::bindings
