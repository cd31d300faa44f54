# engine/train checkpoints: safetensors I/O, CRC32C checksums, and the checkpoint directory format
# (rank writers, the commit, LatestCommitted, loading with verification, retention).
add_library(dsv3_checkpoint STATIC
  ${CMAKE_CURRENT_LIST_DIR}/checksum.cc
  ${CMAKE_CURRENT_LIST_DIR}/checkpoint.cc
  ${CMAKE_CURRENT_LIST_DIR}/checkpoint_manifest.cc
  ${CMAKE_CURRENT_LIST_DIR}/checkpoint_reader.cc
  ${CMAKE_CURRENT_LIST_DIR}/posix_file.cc
  ${CMAKE_CURRENT_LIST_DIR}/safetensors.cc
)
target_link_libraries(dsv3_checkpoint
  PUBLIC dsv3_common absl::status absl::statusor absl::span absl::strings
  PRIVATE dsv3_kernels nlohmann_json::nlohmann_json absl::str_format absl::time spdlog::spdlog)

set(DSV3_CHECKPOINT_PYTHON /usr/bin/python3 CACHE FILEPATH
    "Python with numpy and torch for the safetensors cross-check (Debian's)")

add_executable(checkpoint_test
  ${CMAKE_CURRENT_LIST_DIR}/checksum_test.cc
  ${CMAKE_CURRENT_LIST_DIR}/safetensors_test.cc
  ${CMAKE_CURRENT_LIST_DIR}/safetensors_corruption_test.cc
  ${CMAKE_CURRENT_LIST_DIR}/checkpoint_manifest_test.cc
  ${CMAKE_CURRENT_LIST_DIR}/checkpoint_test.cc
)
target_link_libraries(checkpoint_test PRIVATE
  dsv3_checkpoint dsv3_kernels dsv3_testing nlohmann_json::nlohmann_json GTest::gtest_main)
target_compile_definitions(checkpoint_test PRIVATE
  DSV3_CHECKPOINT_PYTHON="${DSV3_CHECKPOINT_PYTHON}"
  DSV3_SOURCE_ROOT="${PROJECT_SOURCE_DIR}")
gtest_discover_tests(checkpoint_test TEST_PREFIX "checkpoint." DISCOVERY_TIMEOUT 60
                     PROPERTIES TIMEOUT 120)
