#include "mproc/error.hpp"

#include <string.h>

#include <memory>
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
  if (status < 0) {
    if (const char* abbrev = ::sigabbrev_np(-status))
      return fmt::format("worker killed by signal {} (SIG{})", -status, abbrev);
    return fmt::format("worker killed by signal {}", -status);
  }
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

struct RemoteError::Details {
  std::string type_name, message, traceback, text;
  std::optional<std::size_t> task_index;
  pid_t worker_pid;
  std::error_code code;
};

RemoteError::RemoteError(std::string type_name, std::string message, std::string traceback,
                         std::optional<std::size_t> task_index, pid_t worker_pid,
                         std::error_code code) {
  auto d = std::make_shared<Details>();
  d->text = detail::remote_text(type_name, message, task_index, worker_pid);
  d->type_name = std::move(type_name);
  d->message = std::move(message);
  d->traceback = std::move(traceback);
  d->task_index = task_index;
  d->worker_pid = worker_pid;
  d->code = code;
  details_ = std::move(d);
}
RemoteError::~RemoteError() = default;
const char* RemoteError::what() const noexcept { return details_->text.c_str(); }
const std::string& RemoteError::type_name() const noexcept { return details_->type_name; }
const std::string& RemoteError::message() const noexcept { return details_->message; }
const std::string& RemoteError::traceback() const noexcept { return details_->traceback; }
std::optional<std::size_t> RemoteError::task_index() const noexcept {
  return details_->task_index;
}
pid_t RemoteError::worker_pid() const noexcept { return details_->worker_pid; }
std::error_code RemoteError::error_code() const noexcept { return details_->code; }

std::string detail::remote_text(const std::string& type_name, const std::string& message,
                                std::optional<std::size_t> task_index, pid_t worker_pid) {
  return fmt::format("{}: {}{}", type_name, message, task_suffix(task_index, worker_pid));
}

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
