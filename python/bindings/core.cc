// Core utilities: allocator statistics, thread counts.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "bindings.h"
#include "core/allocator.h"
#include "core/thread_pool.h"
#ifdef SPEECHCORE_WITH_CUDA
#include "speechcore_cuda/common.h"
#endif

namespace py = pybind11;

namespace speechcore::bindings {

namespace {
py::dict stats_dict(Device device) {
  const core::AllocatorStats s = core::default_allocator(device).stats();
  py::dict d;
  d["bytes_in_use"] = s.bytes_in_use;
  d["peak_bytes_in_use"] = s.peak_bytes_in_use;
  d["bytes_cached"] = s.bytes_cached;
  d["num_allocs"] = s.num_allocs;
  d["num_cache_hits"] = s.num_cache_hits;
  d["num_system_allocs"] = s.num_system_allocs;
  return d;
}
}  // namespace

void register_core(py::module_& m) {
  m.def("host_memory_stats", [] { return stats_dict(Device::kCPU); }, "Statistics of the host caching allocator.");
  m.def("host_memory_clear_cache", [] { core::default_allocator(Device::kCPU).clear_cache(); },
        "Returns cached host blocks to the system.");
#ifdef SPEECHCORE_WITH_CUDA
  m.def("cuda_memory_stats", [] { return stats_dict(Device::kCUDA); },
        "Statistics of the CUDA caching allocator (weights, caches and activations).");
  m.def("cuda_memory_reset_peak", [] { core::default_allocator(Device::kCUDA).reset_peak(); },
        "Sets peak_bytes_in_use to the bytes in use now (to measure the peak of one phase).");
  m.def("cuda_memory_clear_cache", [] { core::default_allocator(Device::kCUDA).clear_cache(); },
        "Returns cached device blocks to the driver.");
#endif
  m.def("hardware_threads", &core::ThreadPool::hardware_threads);
  m.def("cuda_built", [] {
#ifdef SPEECHCORE_WITH_CUDA
    return true;
#else
    return false;
#endif
  }, "Whether this build has the CUDA backend.");
  m.def("cuda_available", [] {
#ifdef SPEECHCORE_WITH_CUDA
    return cuda::device_count() > 0;
#else
    return false;
#endif
  }, "Whether the CUDA backend is built and a GPU is usable.");
}

}  // namespace speechcore::bindings
