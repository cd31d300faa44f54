# Pipeline schedules as data (DualPipe, DualPipeV, 1F1B), their text notation and the rendezvous
# simulator. Included from engine/parallel/CMakeLists.txt. abseil only; no gRPC, no torch.
add_library(dsv3_schedule STATIC
  ${CMAKE_CURRENT_LIST_DIR}/schedule.cc
  ${CMAKE_CURRENT_LIST_DIR}/schedule_emitter.cc
  ${CMAKE_CURRENT_LIST_DIR}/dualpipe.cc
  ${CMAKE_CURRENT_LIST_DIR}/dualpipev.cc
  ${CMAKE_CURRENT_LIST_DIR}/one_f_one_b.cc
  ${CMAKE_CURRENT_LIST_DIR}/schedule_factory.cc
  ${CMAKE_CURRENT_LIST_DIR}/schedule_format.cc
  ${CMAKE_CURRENT_LIST_DIR}/schedule_sim.cc
)
target_link_libraries(dsv3_schedule PUBLIC
  dsv3_common
  absl::status
  absl::statusor
  absl::strings
  absl::str_format
)

add_executable(dsv3_schedule_test
  ${CMAKE_CURRENT_LIST_DIR}/schedule_format_test.cc
  ${CMAKE_CURRENT_LIST_DIR}/dualpipe_test.cc
  ${CMAKE_CURRENT_LIST_DIR}/dualpipev_test.cc
  ${CMAKE_CURRENT_LIST_DIR}/one_f_one_b_test.cc
  ${CMAKE_CURRENT_LIST_DIR}/schedule_sim_test.cc
)
target_link_libraries(dsv3_schedule_test PRIVATE dsv3_schedule dsv3_testing GTest::gtest_main)
gtest_discover_tests(dsv3_schedule_test TEST_PREFIX "schedule." PROPERTIES TIMEOUT 60)
