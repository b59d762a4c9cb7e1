// pybind11 registration functions, one per binding file; module.cc calls them all.
#pragma once

#include <pybind11/pybind11.h>

#include <string>

#include "core/status.h"
#include "speechcore/engine.h"
#include "speechcore/options.h"
#include "speechcore/results.h"

namespace speechcore::bindings {

// Argument check of the test hooks: kInvalidArgument (InvalidArgumentError) with `what`.
inline void need(bool cond, const std::string& what) {
  if (!cond) throw_error(ErrorCode::kInvalidArgument, what);
}

void register_errors(pybind11::module_& m);
void register_engine(pybind11::module_& m);
// The Python exception object (speechcore.errors class of e.code()) for e; needs the GIL.
pybind11::object python_error(const Error& e);
// A Transcription / Segment as the plain dicts the SDK converts (model.cc).
pybind11::dict transcription_dict(const Transcription& t);
pybind11::dict segment_dict(const Segment& s);
// The frames and channels of a float32 C-contiguous (frames,) / (frames, channels) array (model.cc).
AudioRef audio_ref(const pybind11::handle& obj, int sample_rate, const std::string& what);
// TranscribeOptions from the SDK's option dict (model.cc).
TranscribeOptions parse_transcribe_options(const pybind11::dict& d);
// vad::VadOptions from a dict of its fields, validated (vad.cc).
vad::VadOptions parse_vad_options(const pybind11::dict& d);
void register_core(pybind11::module_& m);
void register_model(pybind11::module_& m);
void register_ops(pybind11::module_& m);
void register_checkpoint(pybind11::module_& m);
void register_tokenizer(pybind11::module_& m);
void register_audio(pybind11::module_& m);
void register_vad(pybind11::module_& m);

#ifdef SPEECHCORE_WITH_CUDA
void register_cuda_gemm(pybind11::module_& m);
void register_cuda_attention(pybind11::module_& m);
void register_cuda_kernels(pybind11::module_& m);
#endif

}  // namespace speechcore::bindings
