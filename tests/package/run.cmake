# Installs the build tree into a temporary prefix, then builds and runs a consumer
# program three ways: find_package(mproc), pkg-config, and add_subdirectory(mproc).
# When mproc was built with MPI (MPROC_HAVE_MPI), an mpi consumer is built through
# find_package(mproc) too and run alone and under MPIEXEC with 3 ranks.
# Run with cmake -P; any failure stops with FATAL_ERROR (a failed test).

function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    string(JOIN " " cmd ${ARGN})
    message(FATAL_ERROR "failed (${rc}): ${cmd}\n${out}\n${err}")
  endif()
  set(last_output "${out}" PARENT_SCOPE)
endfunction()

function(expect_ok program)
  run(${program})
  if(NOT last_output MATCHES "consumer ok: cpu_count=[1-9]")
    message(FATAL_ERROR "${program} printed: ${last_output}")
  endif()
  message(STATUS "${program}: ${last_output}")
endfunction()

# An MPI job that hangs (a rank that never starts or never exits) fails after TIMEOUT
# instead of stalling the test. `expected` is the "ranks=N mpi=0|1" the job must print.
function(expect_mpi_ok expected)
  execute_process(COMMAND ${ARGN} TIMEOUT 120
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  string(JOIN " " cmd ${ARGN})
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "failed (${rc}): ${cmd}\n${out}\n${err}")
  endif()
  if(NOT out MATCHES "mpi consumer ok: ${expected} sum=338350")
    message(FATAL_ERROR "${cmd} printed: ${out}\n${err}")
  endif()
  message(STATUS "${cmd}: ${out}")
endfunction()

set(prefix ${WORK_DIR}/prefix)
file(REMOVE_RECURSE ${WORK_DIR})
run(${CMAKE_COMMAND} --install ${MPROC_BINARY_DIR} --prefix ${prefix})
foreach(f include/mproc/mproc.hpp lib/cmake/mproc/mproc-config.cmake
          lib/cmake/mproc/mproc-config-version.cmake lib/pkgconfig/mproc.pc)
  if(NOT EXISTS ${prefix}/${f})
    message(FATAL_ERROR "install did not create ${f}")
  endif()
endforeach()

# 1. find_package(mproc) against the installed package.
run(${CMAKE_COMMAND} -S ${MPROC_SOURCE_DIR}/tests/package/find_package -B ${WORK_DIR}/fp
    -DCMAKE_PREFIX_PATH=${prefix} -DCMAKE_CXX_COMPILER=${CMAKE_CXX_COMPILER}
    -DCMAKE_BUILD_TYPE=Release -DMPROC_EXPECT_MPI=${MPROC_HAVE_MPI})
run(${CMAKE_COMMAND} --build ${WORK_DIR}/fp)
expect_ok(${WORK_DIR}/fp/consumer)

# 1b. mproc::mpi from the same package: alone (one rank, MPI not initialised) and as a
# job of 3 ranks, more than the machine may have cores. Root may run Open MPI only when
# it says so.
if(MPROC_HAVE_MPI)
  expect_mpi_ok("ranks=1 mpi=0" ${WORK_DIR}/fp/mpi_consumer)
  if(NOT MPIEXEC)
    message(FATAL_ERROR "mproc was built with MPI but no mpiexec was found")
  endif()
  set(ENV{OMPI_ALLOW_RUN_AS_ROOT} 1)
  set(ENV{OMPI_ALLOW_RUN_AS_ROOT_CONFIRM} 1)
  expect_mpi_ok("ranks=3 mpi=1" ${MPIEXEC} -n 3 --oversubscribe ${WORK_DIR}/fp/mpi_consumer)
endif()

# 2. pkg-config, as a Makefile-based project would.
find_program(PKG_CONFIG pkg-config)
if(PKG_CONFIG)
  set(ENV{PKG_CONFIG_PATH} ${prefix}/lib/pkgconfig)
  run(${PKG_CONFIG} --cflags --libs mproc)
  string(STRIP "${last_output}" flags)
  separate_arguments(flags UNIX_COMMAND "${flags}")
  run(${CMAKE_CXX_COMPILER} ${MPROC_SOURCE_DIR}/tests/package/consumer.cpp ${flags}
      -Wl,-rpath,${prefix}/lib -o ${WORK_DIR}/pc-consumer)
  expect_ok(${WORK_DIR}/pc-consumer)
else()
  message(STATUS "pkg-config not found: pkg-config consumer skipped")
endif()

# 3. add_subdirectory(mproc) from a parent project: tests, apps and install stay off.
run(${CMAKE_COMMAND} -S ${MPROC_SOURCE_DIR}/tests/package/add_subdirectory -B ${WORK_DIR}/sub
    -DMPROC_SOURCE_DIR=${MPROC_SOURCE_DIR} -DCMAKE_CXX_COMPILER=${CMAKE_CXX_COMPILER}
    -DCMAKE_BUILD_TYPE=Release)
run(${CMAKE_COMMAND} --build ${WORK_DIR}/sub)
if(EXISTS ${WORK_DIR}/sub/mproc/tests)
  message(FATAL_ERROR "add_subdirectory(mproc) built mproc's tests")
endif()
expect_ok(${WORK_DIR}/sub/consumer)
