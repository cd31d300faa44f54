# Flash-style causal attention (kernels/cpu/attention.h): sources into dsv3_kernels, its test
# binary, and its benchmark. Included by kernels/CMakeLists.txt after dsv3_kernels is defined.
target_sources(dsv3_kernels PRIVATE
  ${CMAKE_CURRENT_LIST_DIR}/attention.cc
  ${CMAKE_CURRENT_LIST_DIR}/attention_kernels_avx512.cc
  ${CMAKE_CURRENT_LIST_DIR}/attention_kernels_scalar.cc
)
# The portable kernels' element-wise loops are written to be auto-vectorised (which never reorders
# a sum); -O2 of GCC 12 vectorises only loops whose trip count it knows.
if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
  set_source_files_properties(${CMAKE_CURRENT_LIST_DIR}/attention_kernels_scalar.cc
    PROPERTIES COMPILE_OPTIONS "-ftree-vectorize;-fvect-cost-model=dynamic")
endif()

# Links dsv3_kernels_testing, which kernels/CMakeLists.txt defines after this file is included;
# target_link_libraries resolves the name when the build is generated, so the order is fine.
add_executable(kernels_attention_test ${CMAKE_CURRENT_LIST_DIR}/attention_test.cc)
target_link_libraries(kernels_attention_test PRIVATE
  dsv3_kernels dsv3_kernels_testing GTest::gtest_main)
target_compile_definitions(kernels_attention_test PRIVATE
  DSV3_ATTENTION_REF_SCRIPT="${CMAKE_CURRENT_LIST_DIR}/../../tests/reference/attention_ref.py")
gtest_discover_tests(kernels_attention_test DISCOVERY_TIMEOUT 60)

# Benchmark (not a test): bench/kernels_attention_bench.py drives it against PyTorch.
set(_dsv3_attention_bench ${CMAKE_CURRENT_LIST_DIR}/../../bench/kernels_attention_bench.cc)
if(EXISTS ${_dsv3_attention_bench})
  add_executable(kernels_attention_bench ${_dsv3_attention_bench})
  target_link_libraries(kernels_attention_bench PRIVATE dsv3_kernels dsv3_kernels_testing)
endif()
