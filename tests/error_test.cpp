#include <mproc/error.hpp>

#include <gtest/gtest.h>

#include <cerrno>
#include <chrono>
#include <exception>
#include <new>
#include <stdexcept>
#include <string>
#include <system_error>
#include <type_traits>

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
  check(std::make_exception_ptr(
            mproc::RemoteException<mproc::Error>("std::out_of_range", "vector", "", 3, 42)),
        "std::out_of_range: vector");
  check(std::make_exception_ptr(mproc::WorkerCrashed(-9, 5, 77)), "signal 9");
  check(std::make_exception_ptr(mproc::TaskTimeout(1500ms, 2, 88)), "1500ms");
  static_assert(std::is_base_of_v<std::runtime_error, mproc::Error>);
}

TEST(Error, RemoteErrorKeepsWhatTheWorkerSaw) {
  const mproc::RemoteException<std::invalid_argument> e(
      "std::invalid_argument", "negative size", "#0 f()\n#1 main()\n", 17, 1234);
  const mproc::RemoteError& r = e;
  EXPECT_EQ(r.type_name(), "std::invalid_argument");
  EXPECT_EQ(r.message(), "negative size");
  EXPECT_EQ(r.traceback(), "#0 f()\n#1 main()\n");
  EXPECT_EQ(r.task_index(), 17u);
  EXPECT_EQ(r.worker_pid(), 1234);
  EXPECT_EQ(r.error_code(), std::error_code());
  const char* text = "std::invalid_argument: negative size (task 17, worker pid 1234)";
  EXPECT_STREQ(r.what(), text);
  EXPECT_STREQ(static_cast<const std::exception&>(e).what(), text);

  // errors are values: futures copy them between threads
  const mproc::RemoteException<std::invalid_argument> copy = e;
  EXPECT_EQ(copy.traceback(), e.traceback());
  EXPECT_STREQ(copy.what(), e.what());
  // The details are shared, not copied: copying an exception must not throw.
  static_assert(std::is_nothrow_copy_constructible_v<mproc::RemoteException<std::out_of_range>>);
  EXPECT_EQ(&copy.traceback(), &e.traceback());
}

/// Which of the handlers a caller may write catch `p`.
struct Caught {
  bool exception = false, remote = false, logic = false, out_of_range = false, error = false;
};
Caught catches(const std::exception_ptr& p) {
  Caught c;
  try { std::rethrow_exception(p); } catch (const std::exception&) { c.exception = true; } catch (...) {}
  try { std::rethrow_exception(p); } catch (const mproc::RemoteError&) { c.remote = true; } catch (...) {}
  try { std::rethrow_exception(p); } catch (const std::logic_error&) { c.logic = true; } catch (...) {}
  try { std::rethrow_exception(p); } catch (const std::out_of_range&) { c.out_of_range = true; } catch (...) {}
  try { std::rethrow_exception(p); } catch (const mproc::Error&) { c.error = true; } catch (...) {}
  return c;
}

TEST(Error, RemoteExceptionIsCaughtAsItsTypeAsRemoteErrorAndAsStdException) {
  // One std::exception base only (RemoteError is not one): two would make the
  // std::exception handler ambiguous, and so not match.
  const Caught oor = catches(std::make_exception_ptr(
      mproc::RemoteException<std::out_of_range>("std::out_of_range", "index 9", "", 9, 7)));
  EXPECT_TRUE(oor.exception);
  EXPECT_TRUE(oor.remote);
  EXPECT_TRUE(oor.logic);
  EXPECT_TRUE(oor.out_of_range);
  EXPECT_FALSE(oor.error);

  const Caught mine = catches(std::make_exception_ptr(
      mproc::RemoteException<mproc::Error>("int", "", "", std::nullopt, 7)));
  EXPECT_TRUE(mine.exception);
  EXPECT_TRUE(mine.remote);
  EXPECT_TRUE(mine.error);
  EXPECT_FALSE(mine.logic);
}

TEST(Error, RemoteSystemErrorKeepsItsCodeAndBadAllocItsDetails) {
  const std::error_code code(ENOENT, std::generic_category());
  const mproc::RemoteException<std::system_error> e(
      "std::system_error", "open config: No such file or directory", "", 2, 9, code);
  const std::system_error& s = e;
  EXPECT_EQ(s.code(), code);
  EXPECT_EQ(e.error_code(), code);
  EXPECT_STREQ(s.what(),
               "std::system_error: open config: No such file or directory (task 2, worker pid 9)");

  const mproc::RemoteException<std::bad_alloc> b("std::bad_alloc", "std::bad_alloc", "", 0, 9);
  const std::bad_alloc& ba = b;
  EXPECT_STREQ(ba.what(), "std::bad_alloc: std::bad_alloc (task 0, worker pid 9)");
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
