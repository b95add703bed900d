// The Pool facade: picks the backend's core at construction (the process pool, the mpi
// pool, or the thread pool) and forwards the life-cycle calls to it. The map family is
// templated in include/mproc/pool.hpp; the backends live in process_pool.cpp,
// ../mpi/mpi_pool.cpp and thread_pool.cpp.
#include <cstdio>
#include <exception>
#include <memory>
#include <stdexcept>
#include <thread>

#include <fmt/format.h>

#include "mproc/pool.hpp"
#include "mproc/runtime.hpp"

namespace mproc {
namespace detail {

PoolCore::~PoolCore() = default;
Job::~Job() = default;

void throw_not_shippable(const char* method, bool callable_ok, bool) {
  if (!callable_ok)
    throw std::invalid_argument(fmt::format(
        "Pool::{}: this callable cannot be sent to a worker process: its state is not "
        "trivially copyable (for example a lambda capturing a std::string, a std::vector or "
        "an mproc::Value/Array/Queue/Lock handle by value). Capture only numbers, never "
        "pointers or references (a worker has no copy of objects created after the pool "
        "started); pass the data as the item, or with mproc::bind(f, value, ...) (values and "
        "mproc::Value, Array, Queue, Lock and Manager dict/list handles, sent once per "
        "worker), or use Backend::thread",
        method));
  throw std::invalid_argument(fmt::format(
      "Pool::{}: the arguments or the result of this call cannot be sent between processes: "
      "they must be serializable (mproc/serialize.hpp) and default-constructible, and the "
      "callable must return the same type for a moved argument as for a stored one; or use "
      "Backend::thread",
      method));
}

}  // namespace detail

Pool::Pool(PoolOptions options)
    : backend_(options.backend), chunksize_(options.chunksize), progress_bar_(options.progress) {
  switch (options.backend) {
    case Backend::process:
      core_ = detail::make_process_pool(options);
      break;
    case Backend::thread:
      if (options.task_timeout.count() > 0)
        throw std::invalid_argument(
            "Pool: task_timeout needs Backend::process (a thread cannot be stopped)");
      if (options.workers > 4096) throw std::invalid_argument("Pool: workers must be at most 4096");
      threads_ = std::make_unique<detail::ThreadCore>(
          detail::ThreadCoreOptions{options.workers, options.initializer, options.trace});
      break;
    case Backend::mpi: {
      const detail::MpiHooks* mpi = detail::active_mpi_hooks();
      if (mpi == nullptr)
        throw std::invalid_argument(
            "Pool: Backend::mpi needs MPI: link mproc::mpi and construct an mproc::Runtime "
            "at the start of main");
      if (mpi->size() > 1) {
        core_ = mpi->make_pool(options);
        break;
      }
      // One rank, no other rank to run tasks: they run in this process, on one thread.
      if (options.task_timeout.count() > 0)
        throw std::invalid_argument("Pool: task_timeout needs Backend::process");
      threads_ = std::make_unique<detail::ThreadCore>(
          detail::ThreadCoreOptions{1, options.initializer, options.trace});
      break;
    }
  }
}

Pool::Pool(unsigned workers) : Pool(PoolOptions{.workers = workers}) {}

Pool::~Pool() {
  try {
    close();
    if (in_own_work()) {
      // A callback of this pool dropped it: joining here would wait for that callback. A
      // thread of its own joins and frees the core once the callback has returned.
      std::thread([core = std::move(core_), threads = std::move(threads_)] {
        try {
          if (threads) threads->join();
          if (core) core->join();
        } catch (const std::exception& e) {
          std::fprintf(stderr, "mproc: Pool destructor: %s\n", e.what());
        }
      }).detach();
      return;
    }
    join();
  } catch (const std::exception& e) {
    // A destructor must not throw; say once what went wrong rather than nothing.
    std::fprintf(stderr, "mproc: Pool destructor: %s\n", e.what());
  } catch (...) {
    std::fprintf(stderr, "mproc: Pool destructor: unknown exception\n");
  }
}

bool Pool::in_own_work() const noexcept {
  return threads_ ? threads_->in_own_task() : core_->in_own_work();
}

unsigned Pool::workers() const noexcept {
  return threads_ ? threads_->workers() : core_->workers();
}
void Pool::close() {
  if (threads_)
    threads_->close();
  else
    core_->close();
}
void Pool::join() {
  if (threads_)
    threads_->join();
  else
    core_->join();
}
void Pool::terminate() {
  if (threads_)
    threads_->terminate();
  else
    core_->terminate();
}
void Pool::cancel_pending() {
  if (threads_)
    threads_->cancel_pending();
  else
    core_->cancel_pending();
}

std::size_t Pool::stream_window() const noexcept { return std::size_t{1024} * workers(); }

}  // namespace mproc
