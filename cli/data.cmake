# dsv3-data: the Brown corpus to a SentencePiece BPE tokenizer and llm.c token shards, plus shard
# tools (inspect, order). Included from cli/CMakeLists.txt. SentencePiece (through pkg-config)
# carries its own protobuf 3.14, so nothing here may link protobuf or gRPC (DESIGN.md, Dependencies);
# and only data_tokenizer.cc includes its headers, because they clash with abseil in one TU.
find_package(PkgConfig REQUIRED)
pkg_check_modules(SENTENCEPIECE REQUIRED IMPORTED_TARGET sentencepiece)

# The SentencePiece boundary: standard library only, no abseil.
add_library(dsv3_data_tokenizer STATIC ${CMAKE_CURRENT_LIST_DIR}/data_tokenizer.cc)
target_include_directories(dsv3_data_tokenizer PUBLIC ${PROJECT_SOURCE_DIR})
target_link_libraries(dsv3_data_tokenizer PUBLIC PkgConfig::SENTENCEPIECE)

# Everything of dsv3-data but main(), so the tests run it in-process.
add_library(dsv3_data_tool_lib STATIC
  ${CMAKE_CURRENT_LIST_DIR}/data_corpus.cc
  ${CMAKE_CURRENT_LIST_DIR}/data_prepare.cc
  ${CMAKE_CURRENT_LIST_DIR}/data_inspect.cc
  ${CMAKE_CURRENT_LIST_DIR}/data_tool.cc
)
target_link_libraries(dsv3_data_tool_lib PUBLIC
  dsv3_data_tokenizer
  dsv3_data
  dsv3_common
  absl::status
  absl::statusor
  absl::strings
  absl::str_format
  nlohmann_json::nlohmann_json
)

add_executable(dsv3-data ${CMAKE_CURRENT_LIST_DIR}/dsv3_data_main.cc)
target_link_libraries(dsv3-data PRIVATE dsv3_data_tool_lib)

add_executable(dsv3_data_tool_test
  ${CMAKE_CURRENT_LIST_DIR}/data_corpus_test.cc
  ${CMAKE_CURRENT_LIST_DIR}/data_tool_test.cc
)
target_link_libraries(dsv3_data_tool_test PRIVATE dsv3_data_tool_lib dsv3_testing
                      GTest::gtest_main)
gtest_discover_tests(dsv3_data_tool_test TEST_PREFIX "dsv3_data." PROPERTIES TIMEOUT 120)
