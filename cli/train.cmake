# dsv3-train: the local training tool, a verb dispatcher (dsv3_train_main.cc). Each verb is a
# command function in cli/train_*_cmd.{h,cc} compiled into dsv3_train_cli; add new verbs' sources
# (or their libraries) here. Included from cli/CMakeLists.txt.
add_library(dsv3_train_cli STATIC
  ${CMAKE_CURRENT_LIST_DIR}/train_schedule_cmd.cc
)
target_link_libraries(dsv3_train_cli PUBLIC dsv3_schedule absl::status absl::statusor
                      absl::strings)

add_executable(dsv3-train ${CMAKE_CURRENT_LIST_DIR}/dsv3_train_main.cc)
target_link_libraries(dsv3-train PRIVATE dsv3_train_cli)

# In-process tests of the verbs, plus a few that run the dsv3-train binary itself.
add_executable(dsv3_train_test ${CMAKE_CURRENT_LIST_DIR}/train_schedule_cmd_test.cc)
target_link_libraries(dsv3_train_test PRIVATE dsv3_train_cli dsv3_testing GTest::gtest_main)
target_compile_definitions(dsv3_train_test PRIVATE
                           DSV3_TRAIN_BINARY="$<TARGET_FILE:dsv3-train>")
add_dependencies(dsv3_train_test dsv3-train)
gtest_discover_tests(dsv3_train_test TEST_PREFIX "dsv3_train." PROPERTIES TIMEOUT 60)
