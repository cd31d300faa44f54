# dsv3-train: the local training tool, a verb dispatcher (dsv3_train_main.cc). Each verb is a
# command function in cli/train_*_cmd.{h,cc} compiled into dsv3_train_cli; add new verbs' sources
# (or their libraries) here. Included from cli/CMakeLists.txt.
add_library(dsv3_train_cli STATIC
  ${CMAKE_CURRENT_LIST_DIR}/train_schedule_cmd.cc
  ${CMAKE_CURRENT_LIST_DIR}/train_flags.cc
  ${CMAKE_CURRENT_LIST_DIR}/train_model_dir.cc
  ${CMAKE_CURRENT_LIST_DIR}/train_eval_cmd.cc
  ${CMAKE_CURRENT_LIST_DIR}/train_export_cmd.cc
)
target_link_libraries(dsv3_train_cli PUBLIC dsv3_schedule dsv3_model_io dsv3_job_spec dsv3_npy
                      absl::status absl::statusor absl::strings absl::str_format)

add_executable(dsv3-train ${CMAKE_CURRENT_LIST_DIR}/dsv3_train_main.cc)
target_link_libraries(dsv3-train PRIVATE dsv3_train_cli)

# In-process tests of the verbs, plus a few that run the dsv3-train binary itself.
add_executable(dsv3_train_test ${CMAKE_CURRENT_LIST_DIR}/train_schedule_cmd_test.cc)
target_link_libraries(dsv3_train_test PRIVATE dsv3_train_cli dsv3_testing GTest::gtest_main)
target_compile_definitions(dsv3_train_test PRIVATE
                           DSV3_TRAIN_BINARY="$<TARGET_FILE:dsv3-train>")
add_dependencies(dsv3_train_test dsv3-train)
gtest_discover_tests(dsv3_train_test TEST_PREFIX "dsv3_train." PROPERTIES TIMEOUT 60)

# In-process tests of the model verbs (eval, export) and of config.json parsing. The comparison of
# eval's numbers with the PyTorch reference is tests/integration/model_eval_test.py.
add_executable(dsv3_train_model_test ${CMAKE_CURRENT_LIST_DIR}/train_model_cmd_test.cc)
target_link_libraries(dsv3_train_model_test PRIVATE dsv3_train_cli dsv3_testing
                      nlohmann_json::nlohmann_json GTest::gtest_main)
target_compile_definitions(dsv3_train_model_test PRIVATE DSV3_SOURCE_ROOT="${PROJECT_SOURCE_DIR}")
gtest_discover_tests(dsv3_train_model_test TEST_PREFIX "dsv3_train." DISCOVERY_TIMEOUT 60
                     PROPERTIES TIMEOUT 120)

# `dsv3-train run` (train_run_cmd.cc): the single-process trainer of engine/train.
target_sources(dsv3_train_cli PRIVATE ${CMAKE_CURRENT_LIST_DIR}/train_run_cmd.cc)
target_link_libraries(dsv3_train_cli PUBLIC dsv3_trainer dsv3_job_spec dsv3_planner dsv3_coordinator_store)

# In-process tests of `run` (flags, spec errors, a tiny run, resume) and one through the binary.
add_executable(dsv3_train_run_test ${CMAKE_CURRENT_LIST_DIR}/train_run_cmd_test.cc)
target_link_libraries(dsv3_train_run_test PRIVATE dsv3_train_cli dsv3_testing GTest::gtest_main)
target_compile_definitions(dsv3_train_run_test PRIVATE
                           DSV3_TRAIN_BINARY="$<TARGET_FILE:dsv3-train>")
add_dependencies(dsv3_train_run_test dsv3-train)
gtest_discover_tests(dsv3_train_run_test TEST_PREFIX "dsv3_train_run." DISCOVERY_TIMEOUT 60
                     PROPERTIES TIMEOUT 300)

# Multi-process `run --world_size=2` through the binary (Gloo on 127.0.0.1, a file store) against a
# single-process run; a rank that dies.
add_executable(dsv3_train_run_dp_test ${CMAKE_CURRENT_LIST_DIR}/train_run_dp_test.cc)
target_link_libraries(dsv3_train_run_dp_test PRIVATE dsv3_train_cli dsv3_testing GTest::gtest_main)
target_compile_definitions(dsv3_train_run_dp_test PRIVATE
                           DSV3_TRAIN_BINARY="$<TARGET_FILE:dsv3-train>")
add_dependencies(dsv3_train_run_dp_test dsv3-train)
gtest_discover_tests(dsv3_train_run_dp_test TEST_PREFIX "dsv3_train_run_dp." DISCOVERY_TIMEOUT 60
                     PROPERTIES TIMEOUT 400)
