# Installs the build tree into a temporary prefix, runs the installed mproc tool with a
# clean environment, then builds and runs consumer programs against the install:
#   find_package(mproc) with MPI disabled in the consumer (mproc::mproc needs no MPI);
#   COMPONENTS mpi (mproc::mpi, run alone and under MPIEXEC with 3 ranks), or, on an
#     install without MPI, a clear failure; OPTIONAL_COMPONENTS mpi either way;
#   COMPONENTS frob, which must fail naming it;
#   pkg-config for mproc and mproc_mpi; add_subdirectory(mproc).
# Last, the prefix is moved and the tool run from its new place (relative RPATH).
# Run with cmake -P; any failure stops with FATAL_ERROR (a failed test).

function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    string(JOIN " " cmd ${ARGN})
    message(FATAL_ERROR "failed (${rc}): ${cmd}\n${out}\n${err}")
  endif()
  set(last_output "${out}" PARENT_SCOPE)
endfunction()

# The command must fail, and say `pattern` (a regex) on stdout or stderr.
function(expect_fail pattern)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  string(JOIN " " cmd ${ARGN})
  if(rc EQUAL 0)
    message(FATAL_ERROR "succeeded but must fail: ${cmd}\n${out}\n${err}")
  endif()
  if(NOT "${out}${err}" MATCHES "${pattern}")
    message(FATAL_ERROR "failed without saying '${pattern}': ${cmd}\n${out}\n${err}")
  endif()
  message(STATUS "failed as it must (${pattern}): ${cmd}")
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

# The installed `mproc` under `root`, run with an empty environment (no LD_LIBRARY_PATH):
# it finds libmproc (and libmproc_mpi) through its RPATH alone.
function(expect_tool_runs root)
  set(tool ${root}/bin/mproc)
  run(env -i ${tool} info)
  if(NOT last_output MATCHES "\nbackends:\n")
    message(FATAL_ERROR "${tool} info printed: ${last_output}")
  endif()
  if(MPROC_HAVE_MPI)
    set(mpi_line "\n  mpi      built \\([^\n]*MPI [0-9]+\\.[0-9]+; run under mpirun: --backend mpi\\)\n")
  else()
    set(mpi_line "\n  mpi      not built \\(")
  endif()
  if(NOT last_output MATCHES "${mpi_line}")
    message(FATAL_ERROR "${tool} info does not say '${mpi_line}':\n${last_output}")
  endif()
  message(STATUS "env -i ${tool} info:\n${last_output}")

  run(env -i ${tool} wordcount --list --min-count 0 ${WORK_DIR}/words.txt)
  if(NOT last_output STREQUAL "a == 2\nb == 3\nc == 1\n")
    message(FATAL_ERROR "${tool} wordcount printed:\n${last_output}")
  endif()
  message(STATUS "env -i ${tool} wordcount: ok")
endfunction()

# A library built with sanitizers (MPROC_SANITIZE) needs their runtime linked into every
# program that loads it: the consumers link it too. They are compiled with it as well:
# ThreadSanitizer sees no order in the atomics of mproc's header code (futures, shared
# pointers) that a consumer compiled without it runs, and reports races that are not.
set(sanitize_flags "")
if(MPROC_SANITIZE)
  set(sanitize_flags -fsanitize=${MPROC_SANITIZE})
endif()

# A fresh build directory of the find_package consumer; ARGN: more -D options.
function(configure_consumer name)
  run(${CMAKE_COMMAND} -S ${MPROC_SOURCE_DIR}/tests/package/find_package -B ${WORK_DIR}/${name}
      -DCMAKE_PREFIX_PATH=${prefix} -DCMAKE_CXX_COMPILER=${CMAKE_CXX_COMPILER}
      "-DCMAKE_CXX_FLAGS=${sanitize_flags}" "-DCMAKE_EXE_LINKER_FLAGS=${sanitize_flags}"
      -DCMAKE_BUILD_TYPE=Release ${ARGN})
  set(last_output "${last_output}" PARENT_SCOPE)
endfunction()

if(NOT MPROC_INSTALL_LIBDIR)
  set(MPROC_INSTALL_LIBDIR lib)
endif()
set(prefix ${WORK_DIR}/prefix)
set(libdir ${prefix}/${MPROC_INSTALL_LIBDIR})
file(REMOVE_RECURSE ${WORK_DIR})
file(MAKE_DIRECTORY ${WORK_DIR})
file(WRITE ${WORK_DIR}/words.txt "b a b c b a\n")
run(${CMAKE_COMMAND} --install ${MPROC_BINARY_DIR} --prefix ${prefix})
foreach(f include/mproc/mproc.hpp ${MPROC_INSTALL_LIBDIR}/cmake/mproc/mproc-config.cmake
          ${MPROC_INSTALL_LIBDIR}/cmake/mproc/mproc-config-version.cmake
          ${MPROC_INSTALL_LIBDIR}/cmake/mproc/mproc-targets.cmake
          ${MPROC_INSTALL_LIBDIR}/pkgconfig/mproc.pc)
  if(NOT EXISTS ${prefix}/${f})
    message(FATAL_ERROR "install did not create ${f}")
  endif()
endforeach()
foreach(f ${MPROC_INSTALL_LIBDIR}/cmake/mproc/mproc-mpi-targets.cmake
          ${MPROC_INSTALL_LIBDIR}/pkgconfig/mproc_mpi.pc)
  if(MPROC_HAVE_MPI AND NOT EXISTS ${prefix}/${f})
    message(FATAL_ERROR "mproc was built with MPI but install did not create ${f}")
  elseif(NOT MPROC_HAVE_MPI AND EXISTS ${prefix}/${f})
    message(FATAL_ERROR "mproc was built without MPI but install created ${f}")
  endif()
endforeach()
file(READ ${libdir}/cmake/mproc/mproc-targets.cmake targets)
if(targets MATCHES "MPI::|mproc_mpi|mproc::mpi")
  message(FATAL_ERROR "mproc-targets.cmake mentions MPI: importing mproc::mproc would need it")
endif()

# 0. The installed tool, and its RPATH: relative, never the build tree.
if(MPROC_HAVE_APPS)
  expect_tool_runs(${prefix})
  find_program(READELF readelf)
  if(READELF)
    foreach(f bin/mproc ${MPROC_INSTALL_LIBDIR}/libmproc_mpi.so)
      if(EXISTS ${prefix}/${f})
        run(${READELF} -d ${prefix}/${f})
        if(NOT last_output MATCHES "R(UN)?PATH[^\n]*\\$ORIGIN"
           OR last_output MATCHES "PATH[^\n]*${MPROC_BINARY_DIR}")
          message(FATAL_ERROR "${f}: no relative RPATH, or one into the build tree:\n${last_output}")
        endif()
      endif()
    endforeach()
  endif()
endif()

# 1. find_package(mproc) in a project that cannot find MPI: mproc::mproc alone.
configure_consumer(fp -DMPROC_FIND=plain -DCMAKE_DISABLE_FIND_PACKAGE_MPI=ON)
run(${CMAKE_COMMAND} --build ${WORK_DIR}/fp)
expect_ok(${WORK_DIR}/fp/consumer)

# 1b. COMPONENTS mpi: mproc::mpi alone (one rank, MPI not initialised) and as a job of 3
# ranks, more than the machine may have cores. Root may run Open MPI only when it says
# so. Asked of an install without MPI, or where the consumer cannot find MPI, it fails.
if(MPROC_HAVE_MPI)
  configure_consumer(fp-mpi -DMPROC_FIND=mpi)
  run(${CMAKE_COMMAND} --build ${WORK_DIR}/fp-mpi)
  expect_mpi_ok("ranks=1 mpi=0" ${WORK_DIR}/fp-mpi/mpi_consumer)
  if(NOT MPIEXEC)
    message(FATAL_ERROR "mproc was built with MPI but no mpiexec was found")
  endif()
  set(ENV{OMPI_ALLOW_RUN_AS_ROOT} 1)
  set(ENV{OMPI_ALLOW_RUN_AS_ROOT_CONFIRM} 1)
  expect_mpi_ok("ranks=3 mpi=1" ${MPIEXEC} -n 3 --oversubscribe ${WORK_DIR}/fp-mpi/mpi_consumer)
  expect_fail("MPI.*\\(find_dependency\\)" ${CMAKE_COMMAND} -S ${MPROC_SOURCE_DIR}/tests/package/find_package
              -B ${WORK_DIR}/fp-mpi-disabled -DCMAKE_PREFIX_PATH=${prefix}
              -DMPROC_FIND=mpi -DCMAKE_DISABLE_FIND_PACKAGE_MPI=ON)
else()
  expect_fail("component 'mpi' is not in this install: mproc was built without MPI"
              ${CMAKE_COMMAND} -S ${MPROC_SOURCE_DIR}/tests/package/find_package
              -B ${WORK_DIR}/fp-mpi -DCMAKE_PREFIX_PATH=${prefix} -DMPROC_FIND=mpi)
endif()

# 1c. OPTIONAL_COMPONENTS mpi: found exactly when the install has it and MPI is there.
configure_consumer(fp-optional -DMPROC_FIND=optional -DMPROC_EXPECT_MPI=${MPROC_HAVE_MPI})
configure_consumer(fp-optional-disabled -DMPROC_FIND=optional -DMPROC_EXPECT_MPI=OFF
                   -DCMAKE_DISABLE_FIND_PACKAGE_MPI=ON)

# 1d. An unknown component.
expect_fail("mproc: unknown component 'frob' \\(components: mpi\\)"
            ${CMAKE_COMMAND} -S ${MPROC_SOURCE_DIR}/tests/package/find_package
            -B ${WORK_DIR}/fp-frob -DCMAKE_PREFIX_PATH=${prefix} -DMPROC_FIND=frob)

# 2. pkg-config, as a Makefile-based project would: mproc, and mproc_mpi run alone.
find_program(PKG_CONFIG pkg-config)
if(PKG_CONFIG)
  set(ENV{PKG_CONFIG_PATH} ${libdir}/pkgconfig)
  run(${PKG_CONFIG} --cflags --libs mproc)
  string(STRIP "${last_output}" flags)
  separate_arguments(flags UNIX_COMMAND "${flags}")
  run(${CMAKE_CXX_COMPILER} ${MPROC_SOURCE_DIR}/tests/package/consumer.cpp ${flags}
      ${sanitize_flags} -Wl,-rpath,${libdir} -o ${WORK_DIR}/pc-consumer)
  expect_ok(${WORK_DIR}/pc-consumer)
  if(MPROC_HAVE_MPI)
    run(${PKG_CONFIG} --cflags --libs mproc_mpi)
    string(STRIP "${last_output}" flags)
    message(STATUS "pkg-config --cflags --libs mproc_mpi: ${flags}")
    separate_arguments(flags UNIX_COMMAND "${flags}")
    run(${CMAKE_CXX_COMPILER} ${MPROC_SOURCE_DIR}/tests/package/mpi_consumer.cpp ${flags}
        ${sanitize_flags} -Wl,-rpath,${libdir} -o ${WORK_DIR}/pc-mpi-consumer)
    expect_mpi_ok("ranks=1 mpi=0" ${WORK_DIR}/pc-mpi-consumer)
  endif()
else()
  message(STATUS "pkg-config not found: pkg-config consumers skipped")
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

# 4. The installed tree moved elsewhere: the tool still runs, from its new place only.
if(MPROC_HAVE_APPS)
  file(RENAME ${prefix} ${WORK_DIR}/moved)
  expect_tool_runs(${WORK_DIR}/moved)
endif()
