# Unit tests of the model's own contracts (engine/model/model_test.cc). Included from
# engine/model/CMakeLists.txt. The comparison against the PyTorch reference is
# tests/integration/model_eval_test.py.
add_executable(model_test ${CMAKE_CURRENT_LIST_DIR}/model_test.cc)
target_link_libraries(model_test PRIVATE dsv3_model dsv3_testing GTest::gtest_main)
gtest_discover_tests(model_test TEST_PREFIX "model." PROPERTIES TIMEOUT 120)
