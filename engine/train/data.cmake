# dsv3_data: llm.c token shards (read, mmap; write, atomic) and the deterministic data order
# (global batches by (seed, step), layout-independent slices, validation batches). Included from
# engine/train/CMakeLists.txt. abseil only: no protobuf, no gRPC, no tokenizer.
add_library(dsv3_data STATIC
  ${CMAKE_CURRENT_LIST_DIR}/token_shard.cc
  ${CMAKE_CURRENT_LIST_DIR}/data_loader.cc
)
target_link_libraries(dsv3_data PUBLIC
  dsv3_common
  absl::status
  absl::statusor
  absl::strings
  absl::str_format
  absl::span
  absl::synchronization
)

add_executable(dsv3_data_test
  ${CMAKE_CURRENT_LIST_DIR}/token_shard_test.cc
  ${CMAKE_CURRENT_LIST_DIR}/data_loader_test.cc
)
target_link_libraries(dsv3_data_test PRIVATE dsv3_data dsv3_testing GTest::gtest_main)
gtest_discover_tests(dsv3_data_test TEST_PREFIX "data." PROPERTIES TIMEOUT 60)
