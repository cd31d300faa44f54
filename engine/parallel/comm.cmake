# Communicators and rendezvous stores (included by engine/parallel/CMakeLists.txt).
#   dsv3_store          Store interface, PrefixStore, InProcessStore, FileStore
#   dsv3_comm           Communicator interface + factory, the in-process and Gloo backends, and
#                       the NCCL backend when CUDA is enabled (DSV3_HAVE_NCCL)
#   dsv3_comm_testing   FaultyCommunicator (tests only)
# No gRPC here: the coordinator-backed store lives in worker/ (worker/store.cmake).
find_package(Gloo REQUIRED)
get_filename_component(_dsv3_comm_root ${CMAKE_CURRENT_SOURCE_DIR}/../.. ABSOLUTE)

add_library(dsv3_store STATIC store.cc in_process_store.cc store_file.cc)
target_include_directories(dsv3_store PUBLIC ${_dsv3_comm_root})
target_link_libraries(dsv3_store PUBLIC dsv3_common absl::status absl::statusor absl::strings
                      absl::str_format absl::synchronization absl::time absl::span)

add_library(dsv3_comm STATIC
  communicator.cc
  communicator_protocol.cc
  communicator_op.cc
  communicator_work.cc
  communicator_base.cc
  in_process_communicator.cc
  gloo_status.cc
  gloo_store.cc
  gloo_communicator.cc
)
target_link_libraries(dsv3_comm PUBLIC dsv3_store Threads::Threads PRIVATE gloo)

set(DSV3_HAVE_NCCL OFF)
if(DSV3_ENABLE_CUDA)
  find_library(DSV3_NCCL_LIBRARY nccl HINTS ${CUDAToolkit_LIBRARY_DIR} /usr/local/cuda/lib64)
  find_path(DSV3_NCCL_INCLUDE_DIR nccl.h HINTS ${CUDAToolkit_INCLUDE_DIRS} /usr/local/cuda/include)
  if(DSV3_NCCL_LIBRARY AND DSV3_NCCL_INCLUDE_DIR)
    set(DSV3_HAVE_NCCL ON)
    target_sources(dsv3_comm PRIVATE nccl_status.cc nccl_communicator.cc)
    target_compile_definitions(dsv3_comm PRIVATE DSV3_HAVE_NCCL)
    target_include_directories(dsv3_comm PRIVATE ${DSV3_NCCL_INCLUDE_DIR})
    target_link_libraries(dsv3_comm PRIVATE CUDA::cudart ${DSV3_NCCL_LIBRARY})
  endif()
endif()
message(STATUS "dsv3_comm: NCCL backend ${DSV3_HAVE_NCCL}")

add_library(dsv3_comm_testing STATIC faulty_communicator.cc)
target_link_libraries(dsv3_comm_testing PUBLIC dsv3_comm)

# ---- Tests --------------------------------------------------------------------------------------
function(dsv3_comm_test name)
  add_executable(${name} ${name}.cc)
  target_link_libraries(${name} PRIVATE ${ARGN} dsv3_testing)
  gtest_discover_tests(${name} DISCOVERY_TIMEOUT 60 PROPERTIES TIMEOUT 60 LABELS comm)
endfunction()
dsv3_comm_test(store_test dsv3_store GTest::gtest_main)
dsv3_comm_test(communicator_protocol_test dsv3_comm GTest::gtest_main)
dsv3_comm_test(communicator_test dsv3_comm_testing GTest::gtest_main)
# Has its own main(): the test re-executes itself as the ranks of a multi-process group.
dsv3_comm_test(gloo_communicator_test dsv3_comm gloo)
if(DSV3_HAVE_NCCL)
  dsv3_comm_test(nccl_communicator_test dsv3_comm CUDA::cudart GTest::gtest_main)
endif()

# ---- Benchmark (bench/comm_bench.cc; not a test) ----------------------------------------------
if(EXISTS ${_dsv3_comm_root}/bench/comm_bench.cc)
  add_executable(comm_bench ${_dsv3_comm_root}/bench/comm_bench.cc)
  target_link_libraries(comm_bench PRIVATE dsv3_comm)
endif()
