# engine/model Hugging Face model I/O (model_io.h: weights from/to safetensors, model directories)
# and checkpoint export (checkpoint_export.h). Included from engine/model/CMakeLists.txt.
add_library(dsv3_model_io STATIC
  ${CMAKE_CURRENT_LIST_DIR}/model_io.cc
  ${CMAKE_CURRENT_LIST_DIR}/checkpoint_export.cc
)
target_link_libraries(dsv3_model_io
  PUBLIC dsv3_model dsv3_checkpoint absl::status absl::statusor absl::strings
  PRIVATE nlohmann_json::nlohmann_json)

add_executable(model_io_test
  ${CMAKE_CURRENT_LIST_DIR}/model_io_test.cc
  ${CMAKE_CURRENT_LIST_DIR}/checkpoint_export_test.cc
)
target_link_libraries(model_io_test PRIVATE dsv3_model_io dsv3_testing GTest::gtest_main)
gtest_discover_tests(model_io_test TEST_PREFIX "model_io." DISCOVERY_TIMEOUT 60
                     PROPERTIES TIMEOUT 120)
