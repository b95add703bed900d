#include <mproc/error.hpp>

#include <gtest/gtest.h>

#include <chrono>
#include <exception>
#include <string>

namespace {

using namespace std::chrono_literals;

TEST(Error, EveryErrorIsAnMprocErrorAndARuntimeError) {
  auto check = [](const std::exception_ptr& p, const std::string& needle) {
    try {
      std::rethrow_exception(p);
    } catch (const mproc::Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
      return;
    } catch (...) {
    }
    ADD_FAILURE() << "not caught as mproc::Error: " << needle;
  };
  check(std::make_exception_ptr(mproc::SerializationError("bad bytes")), "bad bytes");
  check(std::make_exception_ptr(mproc::Cancelled("cancelled")), "cancelled");
  check(std::make_exception_ptr(mproc::PoolClosed("pool closed")), "pool closed");
  check(std::make_exception_ptr(mproc::BrokenPool("broken")), "broken");
  check(std::make_exception_ptr(mproc::TimeoutError("timed out")), "timed out");
  check(std::make_exception_ptr(mproc::RemoteError("std::out_of_range", "vector", "", 3, 42)),
        "std::out_of_range: vector");
  check(std::make_exception_ptr(mproc::WorkerCrashed(-9, 5, 77)), "signal 9");
  check(std::make_exception_ptr(mproc::TaskTimeout(1500ms, 2, 88)), "1500ms");
  static_assert(std::is_base_of_v<std::runtime_error, mproc::Error>);
}

TEST(Error, RemoteErrorKeepsWhatTheWorkerSaw) {
  const mproc::RemoteError e("std::invalid_argument", "negative size", "#0 f()\n#1 main()\n", 17,
                             1234);
  EXPECT_EQ(e.type_name(), "std::invalid_argument");
  EXPECT_EQ(e.message(), "negative size");
  EXPECT_EQ(e.traceback(), "#0 f()\n#1 main()\n");
  EXPECT_EQ(e.task_index(), 17u);
  EXPECT_EQ(e.worker_pid(), 1234);
  EXPECT_STREQ(e.what(), "std::invalid_argument: negative size (task 17, worker pid 1234)");

  const mproc::RemoteError copy = e;  // errors are values: futures copy them between threads
  EXPECT_EQ(copy.traceback(), e.traceback());
  EXPECT_STREQ(copy.what(), e.what());
}

TEST(Error, WorkerCrashedSplitsSignalFromExitCode) {
  const mproc::WorkerCrashed killed(-9, 4, 100);
  EXPECT_EQ(killed.signal(), 9);
  EXPECT_EQ(killed.exit_code(), 0);
  EXPECT_EQ(killed.task_index(), 4u);
  EXPECT_EQ(killed.pid(), 100);
  EXPECT_STREQ(killed.what(), "worker killed by signal 9 (SIGKILL) (task 4, worker pid 100)");

  const mproc::WorkerCrashed exited(3, std::nullopt, 101);
  EXPECT_EQ(exited.signal(), 0);
  EXPECT_EQ(exited.exit_code(), 3);
  EXPECT_FALSE(exited.task_index().has_value());
  EXPECT_STREQ(exited.what(), "worker exited with code 3 (worker pid 101)");
}

TEST(Error, TaskTimeoutReportsTheLimit) {
  const mproc::TaskTimeout t(250ms, 0, 55);
  EXPECT_EQ(t.timeout(), 250ms);
  EXPECT_EQ(t.task_index(), 0u);
  EXPECT_EQ(t.pid(), 55);
  EXPECT_STREQ(t.what(), "task ran past its timeout of 250ms (task 0, worker pid 55)");
}

}  // namespace
