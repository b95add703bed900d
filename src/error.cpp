#include "mproc/error.hpp"

#include <utility>

#include <fmt/chrono.h>
#include <fmt/format.h>

namespace mproc {
namespace {

std::string task_suffix(std::optional<std::size_t> task_index, pid_t pid) {
  std::string s;
  if (task_index) s += fmt::format(" (task {}", *task_index);
  s += fmt::format("{}worker pid {})", task_index ? ", " : " (", pid);
  return s;
}

std::string crash_text(int status) {
  if (status < 0) return fmt::format("worker killed by signal {}", -status);
  return fmt::format("worker exited with code {}", status);
}

}  // namespace

// Out-of-line destructors anchor each class's vtable and type_info in libmproc, so
// `catch (const mproc::Error&)` matches across shared objects.
Error::~Error() = default;
SerializationError::~SerializationError() = default;
Cancelled::~Cancelled() = default;
PoolClosed::~PoolClosed() = default;
BrokenPool::~BrokenPool() = default;
TimeoutError::~TimeoutError() = default;
Closed::~Closed() = default;
BrokenBarrierError::~BrokenBarrierError() = default;
SharedStateError::~SharedStateError() = default;

AttributeError::AttributeError(std::string name)
    : Error(fmt::format("mproc::SharedNamespace has no attribute '{}'", name)),
      name_(std::move(name)) {}
AttributeError::~AttributeError() = default;

RemoteError::RemoteError(std::string type_name, std::string message, std::string traceback,
                         std::optional<std::size_t> task_index, pid_t worker_pid)
    : Error(fmt::format("{}: {}{}", type_name, message, task_suffix(task_index, worker_pid))),
      type_name_(std::move(type_name)),
      message_(std::move(message)),
      traceback_(std::move(traceback)),
      task_index_(task_index),
      worker_pid_(worker_pid) {}
RemoteError::~RemoteError() = default;

WorkerCrashed::WorkerCrashed(int status, std::optional<std::size_t> task_index, pid_t pid)
    : Error(crash_text(status) + task_suffix(task_index, pid)),
      status_(status),
      task_index_(task_index),
      pid_(pid) {}
WorkerCrashed::~WorkerCrashed() = default;

TaskTimeout::TaskTimeout(std::chrono::nanoseconds timeout, std::optional<std::size_t> task_index,
                         pid_t pid)
    : Error(fmt::format("task ran past its timeout of {}{}",
                        std::chrono::duration_cast<std::chrono::milliseconds>(timeout),
                        task_suffix(task_index, pid))),
      timeout_(timeout),
      task_index_(task_index),
      pid_(pid) {}
TaskTimeout::~TaskTimeout() = default;

}  // namespace mproc
