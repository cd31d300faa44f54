# Expert parallelism: the MoE layer's routed experts split over a communicator group, dispatch and
# combine as all-to-alls (included by engine/parallel/CMakeLists.txt).
add_library(dsv3_expert_parallel STATIC ${CMAKE_CURRENT_LIST_DIR}/expert_parallel.cc)
target_link_libraries(dsv3_expert_parallel PUBLIC dsv3_model dsv3_comm)

add_executable(expert_parallel_test ${CMAKE_CURRENT_LIST_DIR}/expert_parallel_test.cc)
target_link_libraries(expert_parallel_test PRIVATE dsv3_expert_parallel dsv3_testing
                      GTest::gtest_main)
gtest_discover_tests(expert_parallel_test TEST_PREFIX "parallel." PROPERTIES TIMEOUT 120)

# The pipeline executor: runs any schedule's op list on the model's stages.
add_library(dsv3_pipeline STATIC ${CMAKE_CURRENT_LIST_DIR}/pipeline_executor.cc)
target_link_libraries(dsv3_pipeline PUBLIC dsv3_model dsv3_comm dsv3_schedule)

add_executable(pipeline_executor_test ${CMAKE_CURRENT_LIST_DIR}/pipeline_executor_test.cc)
target_link_libraries(pipeline_executor_test PRIVATE dsv3_pipeline dsv3_expert_parallel dsv3_testing
                      GTest::gtest_main)
gtest_discover_tests(pipeline_executor_test TEST_PREFIX "parallel." PROPERTIES TIMEOUT 300)
