# GEMMs (kernels/cpu/gemm.h, grouped_gemm.h), included by kernels/CMakeLists.txt after dsv3_kernels
# is defined. FP32/BF16 run on oneDNN (libdnnl-dev) when it is found, else on OpenBLAS
# (libopenblas-dev; the GPU hosts have no oneDNN); FP8 runs on this library's own kernels.
# Adds the test binary kernels_gemm_test and the benchmark kernels_gemm_bench.

find_package(dnnl CONFIG QUIET)
if(dnnl_FOUND)
  find_package(OpenMP REQUIRED COMPONENTS CXX)  # Debian's oneDNN runs on libgomp threads
  message(STATUS "dsv3_kernels: GEMM backend oneDNN ${dnnl_VERSION}")
  target_sources(dsv3_kernels PRIVATE ${CMAKE_CURRENT_LIST_DIR}/gemm_blas_onednn.cc)
  # Link-only: omp.h comes with the compiler, and no other source should get -fopenmp.
  target_link_libraries(dsv3_kernels PRIVATE DNNL::dnnl ${OpenMP_CXX_LIBRARIES})
else()
  set(BLA_VENDOR OpenBLAS)
  find_package(BLAS)
  unset(BLA_VENDOR)
  find_path(DSV3_CBLAS_INCLUDE_DIR cblas.h
    PATH_SUFFIXES openblas-pthread openblas openblas-openmp x86_64-linux-gnu/openblas-pthread
                  x86_64-linux-gnu/openblas-openmp x86_64-linux-gnu)
  if(NOT BLAS_FOUND OR NOT DSV3_CBLAS_INCLUDE_DIR)
    message(FATAL_ERROR "dsv3_kernels: the GEMMs need oneDNN (libdnnl-dev) or OpenBLAS "
                        "(libopenblas-dev); neither was found")
  endif()
  message(STATUS "dsv3_kernels: GEMM backend OpenBLAS (${BLAS_LIBRARIES}); oneDNN not found")
  target_sources(dsv3_kernels PRIVATE ${CMAKE_CURRENT_LIST_DIR}/gemm_blas_openblas.cc)
  set_source_files_properties(${CMAKE_CURRENT_LIST_DIR}/gemm_blas_openblas.cc PROPERTIES
    INCLUDE_DIRECTORIES ${DSV3_CBLAS_INCLUDE_DIR})
  target_link_libraries(dsv3_kernels PRIVATE ${BLAS_LIBRARIES})
endif()

target_sources(dsv3_kernels PRIVATE
  ${CMAKE_CURRENT_LIST_DIR}/gemm.cc
  ${CMAKE_CURRENT_LIST_DIR}/gemm_fp8_avx512.cc
  ${CMAKE_CURRENT_LIST_DIR}/gemm_fp8_engine.cc
  ${CMAKE_CURRENT_LIST_DIR}/gemm_fp8_scalar.cc
  ${CMAKE_CURRENT_LIST_DIR}/grouped_gemm.cc
)

add_executable(kernels_gemm_test
  ${CMAKE_CURRENT_LIST_DIR}/gemm_test.cc
  ${CMAKE_CURRENT_LIST_DIR}/gemm_fp8_test.cc
  ${CMAKE_CURRENT_LIST_DIR}/grouped_gemm_test.cc
)
target_link_libraries(kernels_gemm_test PRIVATE dsv3_kernels dsv3_kernels_testing GTest::gtest_main)
target_compile_options(kernels_gemm_test PRIVATE -ffp-contract=off)
gtest_discover_tests(kernels_gemm_test DISCOVERY_TIMEOUT 60)

# Benchmark (not a test). Its baselines call oneDNN directly and load OpenBLAS with dlopen.
set(_dsv3_gemm_bench ${CMAKE_CURRENT_LIST_DIR}/../../bench/kernels_gemm_bench.cc)
if(EXISTS ${_dsv3_gemm_bench})
  add_executable(kernels_gemm_bench ${_dsv3_gemm_bench})
  target_link_libraries(kernels_gemm_bench PRIVATE dsv3_kernels ${CMAKE_DL_LIBS})
  if(dnnl_FOUND)
    target_link_libraries(kernels_gemm_bench PRIVATE DNNL::dnnl ${OpenMP_CXX_LIBRARIES})
    target_compile_definitions(kernels_gemm_bench PRIVATE DSV3_BENCH_HAVE_DNNL=1)
  endif()
endif()
