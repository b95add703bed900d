// The errors mproc throws. Everything mproc throws on its own account derives from
// mproc::Error; failures of the operating system are std::system_error whose what()
// names the call and its purpose ("memfd_create for Queue: Too many open files").
//
// Errors that describe a task (RemoteError, WorkerCrashed, TaskTimeout) carry the task's
// index in its input range when there is one, and the pid of the worker that ran it.
// They are values: copyable, and safe to rethrow from another thread.
#pragma once

#include <chrono>
#include <cstddef>
#include <optional>
#include <stdexcept>
#include <string>

#include <sys/types.h>

#include "export.hpp"

namespace mproc {

/// Base of every exception mproc throws on its own account.
class MPROC_API Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
  ~Error() override;
};

/// Bytes could not be encoded or decoded: malformed, truncated or hostile input,
/// or a value too large for the wire format.
class MPROC_API SerializationError : public Error {
 public:
  using Error::Error;
  ~SerializationError() override;
};

/// A task threw. Carries what the worker saw: the exception's type name, its what(),
/// the worker's stack trace as text, the task's index and the worker's pid.
class MPROC_API RemoteError : public Error {
 public:
  RemoteError(std::string type_name, std::string message, std::string traceback,
              std::optional<std::size_t> task_index, pid_t worker_pid);
  ~RemoteError() override;

  /// Demangled type of the exception the task threw, e.g. "std::out_of_range".
  const std::string& type_name() const noexcept { return type_name_; }
  /// The original exception's what().
  const std::string& message() const noexcept { return message_; }
  /// The worker's stack at the throw, one frame per line (may be empty).
  const std::string& traceback() const noexcept { return traceback_; }
  std::optional<std::size_t> task_index() const noexcept { return task_index_; }
  pid_t worker_pid() const noexcept { return worker_pid_; }

 private:
  std::string type_name_;
  std::string message_;
  std::string traceback_;
  std::optional<std::size_t> task_index_;
  pid_t worker_pid_;
};

/// The worker running a task died: killed by a signal, or exited (exit(), abort(),
/// a crash). Only the task it was running fails with this error.
class MPROC_API WorkerCrashed : public Error {
 public:
  /// `status` follows Process::exitcode(): minus the signal number, or the exit code.
  WorkerCrashed(int status, std::optional<std::size_t> task_index, pid_t pid);
  ~WorkerCrashed() override;

  /// The signal that killed the worker, or 0 if it exited.
  int signal() const noexcept { return status_ < 0 ? -status_ : 0; }
  /// The worker's exit code, or 0 if a signal killed it.
  int exit_code() const noexcept { return status_ > 0 ? status_ : 0; }
  std::optional<std::size_t> task_index() const noexcept { return task_index_; }
  pid_t pid() const noexcept { return pid_; }

 private:
  int status_;
  std::optional<std::size_t> task_index_;
  pid_t pid_;
};

/// A task ran longer than its pool's task_timeout; its worker was killed and replaced.
class MPROC_API TaskTimeout : public Error {
 public:
  TaskTimeout(std::chrono::nanoseconds timeout, std::optional<std::size_t> task_index, pid_t pid);
  ~TaskTimeout() override;

  std::chrono::nanoseconds timeout() const noexcept { return timeout_; }
  std::optional<std::size_t> task_index() const noexcept { return task_index_; }
  pid_t pid() const noexcept { return pid_; }

 private:
  std::chrono::nanoseconds timeout_;
  std::optional<std::size_t> task_index_;
  pid_t pid_;
};

/// The task was cancelled before it produced a result.
class MPROC_API Cancelled : public Error {
 public:
  using Error::Error;
  ~Cancelled() override;
};

/// Work was submitted to a pool or executor after close(), terminate() or shutdown().
class MPROC_API PoolClosed : public Error {
 public:
  using Error::Error;
  ~PoolClosed() override;
};

/// The pool can no longer run tasks (for example its fork server died).
class MPROC_API BrokenPool : public Error {
 public:
  using Error::Error;
  ~BrokenPool() override;
};

/// A blocking call with a timeout (Future::get(timeout), Process::join(timeout) where
/// documented) ran out of time. Python's TimeoutError.
class MPROC_API TimeoutError : public Error {
 public:
  using Error::Error;
  ~TimeoutError() override;
};

/// A Queue, SimpleQueue, JoinableQueue or Pipe connection was closed: put()/send() after
/// close(), or get()/recv() once every message sent before close() has been received.
class MPROC_API Closed : public Error {
 public:
  using Error::Error;
  ~Closed() override;
};

/// A Barrier was aborted or reset, or a party's wait timed out (which breaks it, as in
/// Python's threading.Barrier).
class MPROC_API BrokenBarrierError : public Error {
 public:
  using Error::Error;
  ~BrokenBarrierError() override;
};

/// A shared object (Value, Array, lock, Queue, Manager) could not be reached from this
/// process: the process that sent the handle has exited and no other holds it, or the
/// bytes describing it are not a live mproc segment.
class MPROC_API SharedStateError : public Error {
 public:
  using Error::Error;
  ~SharedStateError() override;
};

/// A SharedNamespace has no attribute of that name (Python's AttributeError).
class MPROC_API AttributeError : public Error {
 public:
  /// what() is "mproc::SharedNamespace has no attribute '<name>'".
  explicit AttributeError(std::string name);
  ~AttributeError() override;
  /// The attribute that was asked for.
  const std::string& name() const noexcept { return name_; }

 private:
  std::string name_;
};

}  // namespace mproc
