# The coordinator-backed rendezvous store (included by worker/CMakeLists.txt): a gRPC client of
# StoreService implementing the engine's Store interface, and its test against an in-process
# coordinator.
if(TARGET dsv3_store)
  add_library(dsv3_coordinator_store STATIC coordinator_store.cc)
  target_link_libraries(dsv3_coordinator_store PUBLIC dsv3_store dsv3_proto dsv3_common_grpc
                        gRPC::grpc++ absl::time)

  if(TARGET dsv3_coordinator_grpc AND TARGET dsv3_comm)
    add_executable(coordinator_store_test coordinator_store_test.cc)
    target_link_libraries(coordinator_store_test PRIVATE dsv3_coordinator_store
                          dsv3_coordinator_grpc dsv3_comm dsv3_testing GTest::gtest_main)
    gtest_discover_tests(coordinator_store_test DISCOVERY_TIMEOUT 60
                         PROPERTIES TIMEOUT 60 LABELS comm)
  endif()
endif()
