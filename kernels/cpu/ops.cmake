# Model primitives (RMSNorm, RoPE, SwiGLU, router, token permutation, embedding, cross-entropy,
# AdamW, gradient norm): their sources in dsv3_kernels and their test binary kernels_ops_test.
# Included by kernels/CMakeLists.txt after dsv3_kernels is defined; the GEMMs and attention have
# their own .cmake files.
target_sources(dsv3_kernels PRIVATE
  ${CMAKE_CURRENT_LIST_DIR}/adamw.cc
  ${CMAKE_CURRENT_LIST_DIR}/cross_entropy.cc
  ${CMAKE_CURRENT_LIST_DIR}/cross_entropy_avx512.cc
  ${CMAKE_CURRENT_LIST_DIR}/embedding.cc
  ${CMAKE_CURRENT_LIST_DIR}/grad_norm.cc
  ${CMAKE_CURRENT_LIST_DIR}/permute.cc
  ${CMAKE_CURRENT_LIST_DIR}/rmsnorm.cc
  ${CMAKE_CURRENT_LIST_DIR}/rope.cc
  ${CMAKE_CURRENT_LIST_DIR}/router.cc
  ${CMAKE_CURRENT_LIST_DIR}/swiglu.cc
)

# Every forward and backward against PyTorch (tests/reference/ops_ref.py, run once per binary run
# for all cases; see ops_reference.h), plus exact and closed-form checks.
add_executable(kernels_ops_test
  ${CMAKE_CURRENT_LIST_DIR}/ops_reference.cc
  ${CMAKE_CURRENT_LIST_DIR}/adamw_test.cc
  ${CMAKE_CURRENT_LIST_DIR}/cross_entropy_test.cc
  ${CMAKE_CURRENT_LIST_DIR}/embedding_test.cc
  ${CMAKE_CURRENT_LIST_DIR}/grad_norm_test.cc
  ${CMAKE_CURRENT_LIST_DIR}/permute_test.cc
  ${CMAKE_CURRENT_LIST_DIR}/rmsnorm_test.cc
  ${CMAKE_CURRENT_LIST_DIR}/rope_test.cc
  ${CMAKE_CURRENT_LIST_DIR}/router_balance_test.cc
  ${CMAKE_CURRENT_LIST_DIR}/router_test.cc
  ${CMAKE_CURRENT_LIST_DIR}/swiglu_test.cc
)
target_link_libraries(kernels_ops_test PRIVATE dsv3_kernels dsv3_kernels_testing GTest::gtest_main)
target_compile_definitions(kernels_ops_test PRIVATE
  DSV3_SOURCE_ROOT="${CMAKE_CURRENT_LIST_DIR}/../..")
target_compile_options(kernels_ops_test PRIVATE -ffp-contract=off)
gtest_discover_tests(kernels_ops_test DISCOVERY_TIMEOUT 60)
