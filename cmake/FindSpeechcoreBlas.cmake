# Locates OpenBLAS as shipped by the `scipy-openblas32` wheel (PyPI), so that a fresh
# machine needs only the package registries. Its symbols carry the prefix `scipy_`
# (scipy_cblas_sgemm ...). Override with -DSPEECHCORE_OPENBLAS_ROOT=<dir with include/ lib/>.
#
# Result: imported target speechcore::blas and SPEECHCORE_BLAS_LIBRARY (the .so path).

if(NOT SPEECHCORE_OPENBLAS_ROOT)
  find_package(Python3 COMPONENTS Interpreter QUIET)
  if(Python3_Interpreter_FOUND)
    execute_process(
      COMMAND ${Python3_EXECUTABLE} -c
        "import scipy_openblas32, os; print(os.path.dirname(scipy_openblas32.get_lib_dir()))"
      OUTPUT_VARIABLE _sc_ob_root OUTPUT_STRIP_TRAILING_WHITESPACE
      RESULT_VARIABLE _sc_ob_rc ERROR_QUIET)
    if(_sc_ob_rc EQUAL 0 AND EXISTS "${_sc_ob_root}")
      set(SPEECHCORE_OPENBLAS_ROOT "${_sc_ob_root}")
    endif()
  endif()
endif()

if(NOT SPEECHCORE_OPENBLAS_ROOT OR NOT EXISTS "${SPEECHCORE_OPENBLAS_ROOT}/include/cblas.h")
  message(FATAL_ERROR
    "speechcore needs OpenBLAS from the scipy-openblas32 wheel: run `pip install scipy-openblas32` "
    "or pass -DSPEECHCORE_OPENBLAS_ROOT=<dir containing include/cblas.h and lib/libscipy_openblas.so>")
endif()

set(SPEECHCORE_BLAS_LIBRARY "${SPEECHCORE_OPENBLAS_ROOT}/lib/libscipy_openblas.so")
if(NOT EXISTS "${SPEECHCORE_BLAS_LIBRARY}")
  message(FATAL_ERROR "OpenBLAS library not found at ${SPEECHCORE_BLAS_LIBRARY}")
endif()
set(SPEECHCORE_BLAS_INCLUDE_DIR "${SPEECHCORE_OPENBLAS_ROOT}/include")
message(STATUS "speechcore: OpenBLAS ${SPEECHCORE_BLAS_LIBRARY}")
