# CUDA kernels and their tests (built only when CUDA is enabled). The tests compare against the CPU
# implementations and GTEST_SKIP on a machine without a GPU. Device code stays in .cu files behind
# plain C++ headers; test logic is C++20 host code.
add_library(dsv3_kernels_cuda_reference STATIC cuda/fp8_convert_reference.cu)
target_include_directories(dsv3_kernels_cuda_reference PUBLIC ${CMAKE_CURRENT_SOURCE_DIR}/..)
target_link_libraries(dsv3_kernels_cuda_reference PUBLIC CUDA::cudart)

add_executable(kernels_cuda_test cuda/fp8_hardware_test.cc)
target_link_libraries(kernels_cuda_test PRIVATE dsv3_kernels dsv3_kernels_cuda_reference
                      GTest::gtest_main)
gtest_discover_tests(kernels_cuda_test DISCOVERY_TIMEOUT 120 PROPERTIES TIMEOUT 900)
