// The errors mproc throws. Everything mproc throws on its own account derives from
// mproc::Error; failures of the operating system are std::system_error whose what()
// names the call and its purpose ("memfd_create for Queue: Too many open files").
//
// Errors that describe a task (RemoteError, WorkerCrashed, TaskTimeout) carry the task's
// index in its input range when there is one, and the pid of the worker that ran it.
// They are values: copyable, and safe to rethrow from another thread.
//
// A task's exception crosses a process boundary (process and mpi backends; the thread
// backend rethrows the task's own object) as its type's name, its what(), the worker's
// stack and, for std::system_error, its error code. The caller rethrows it as
// RemoteException<E>, where E is the most derived type of the task's exception that
// mproc knows: the standard family (std::logic_error, std::runtime_error and their
// standard subclasses, std::system_error, std::bad_alloc), mproc's own errors, and the
// types registered with register_exception<E>() or MPROC_REGISTER_EXCEPTION(E). So
// `catch (const std::out_of_range&)`, `catch (const mproc::RemoteError&)` (the details)
// and `catch (const std::exception&)` all catch a task's std::out_of_range. A task's
// exception of no known type (an unregistered type that derives from none of them,
// `throw 42`) arrives as RemoteException<mproc::Error>.
//
// RemoteError is a mixin, not a std::exception: a RemoteException<E> with two
// std::exception bases would make `catch (const std::exception&)` ambiguous, and so
// not match. `catch (const mproc::Error&)` catches a task's mproc errors and its
// exceptions of unknown type, not its std::out_of_range.
#pragma once

#include <chrono>
#include <cstddef>
#include <exception>
#include <memory>
#include <new>
#include <optional>
#include <stdexcept>
#include <string>
#include <system_error>
#include <type_traits>
#include <typeinfo>

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

/// What a task's exception carried in the worker that ran it: the exception's type name,
/// its what(), the worker's stack trace as text, the task's index and the worker's pid.
/// A task's exception reaches the caller of a process or mpi pool as a RemoteException<E>,
/// which is both an E and a RemoteError: catch RemoteError for the details of any task's
/// failure, E for its kind. RemoteError is abstract and does not derive from
/// std::exception (see the opening of this file).
class MPROC_API RemoteError {
 public:
  /// `code` is a std::system_error's error code (its value and category), else {}.
  RemoteError(std::string type_name, std::string message, std::string traceback,
              std::optional<std::size_t> task_index, pid_t worker_pid,
              std::error_code code = {});
  RemoteError(const RemoteError&) noexcept = default;
  RemoteError& operator=(const RemoteError&) noexcept = default;
  virtual ~RemoteError();

  /// "type: message (task i, worker pid p)"; RemoteException<E>::what() is the same.
  virtual const char* what() const noexcept = 0;
  /// Demangled type of the exception the task threw, e.g. "std::out_of_range".
  const std::string& type_name() const noexcept;
  /// The original exception's what().
  const std::string& message() const noexcept;
  /// The worker's stack at the throw, one frame per line (may be empty).
  const std::string& traceback() const noexcept;
  std::optional<std::size_t> task_index() const noexcept;
  pid_t worker_pid() const noexcept;
  /// The error code of a task's std::system_error; {} for other exceptions.
  std::error_code error_code() const noexcept;

 private:
  struct Details;
  std::shared_ptr<const Details> details_;  // shared: copying an exception must not throw
};

namespace detail {

/// RemoteError::what()'s text for these details.
MPROC_API std::string remote_text(const std::string& type_name, const std::string& message,
                                  std::optional<std::size_t> task_index, pid_t worker_pid);

/// The E part of a RemoteException<E>, built from the full text (most types), or the
/// message and error code (std::system_error).
template <class E>
E remote_base(const char* text, const std::string&, std::error_code) {
  if constexpr (std::is_same_v<E, std::bad_alloc>)
    return E();
  else if constexpr (std::is_constructible_v<E, const std::string&>)
    return E(std::string(text));
  else
    return E(text);
}
template <>
inline std::system_error remote_base<std::system_error>(const char*, const std::string& message,
                                                        std::error_code code) {
  return std::system_error(code, message);
}

template <class E>
constexpr bool remote_base_ok = std::is_same_v<E, std::bad_alloc> ||
                                std::is_same_v<E, std::system_error> ||
                                std::is_constructible_v<E, const std::string&> ||
                                std::is_constructible_v<E, const char*>;

}  // namespace detail

/// A task's exception of (most derived known) type E, rethrown in the caller with the
/// details the worker saw. `catch (const E&)`, `catch (const mproc::RemoteError&)` and
/// `catch (const std::exception&)` all catch it; what() is RemoteError::what().
template <class E>
class MPROC_API RemoteException final : public E, public RemoteError {
  static_assert(std::is_base_of_v<std::exception, E>,
                "mproc::RemoteException<E>: E must derive from std::exception");
  static_assert(!std::is_final_v<E>,
                "mproc::RemoteException<E>: E must not be final (it becomes a base class)");
  static_assert(std::is_copy_constructible_v<E>,
                "mproc::RemoteException<E>: E must be copy-constructible, as every exception");
  static_assert(detail::remote_base_ok<E>,
                "mproc::RemoteException<E>: E needs a constructor from a message string, "
                "E(const std::string&) or E(const char*), to be rebuilt in the caller");

 public:
  RemoteException(std::string type_name, std::string message, std::string traceback,
                  std::optional<std::size_t> task_index, pid_t worker_pid,
                  std::error_code code = {})
      // Bases are built in order: E reads the strings before RemoteError takes them.
      : E(detail::remote_base<E>(
            detail::remote_text(type_name, message, task_index, worker_pid).c_str(), message,
            code)),
        RemoteError(std::move(type_name), std::move(message), std::move(traceback), task_index,
                    worker_pid, code) {}
  /// The details of `details`, as an E.
  explicit RemoteException(const RemoteError& details)
      : E(detail::remote_base<E>(details.what(), details.message(), details.error_code())),
        RemoteError(details) {}

  const char* what() const noexcept override { return RemoteError::what(); }
};

namespace detail {

/// A type a task's exception may be rethrown as: how to recognise it in the worker and
/// how to rebuild it in the caller.
struct RemoteType {
  std::string name;                                           // demangled; the wire key
  bool (*catches)(const std::exception_ptr&) noexcept;        // is the exception an E?
  std::exception_ptr (*sample)();                             // an E, to order the types
  std::exception_ptr (*make)(const RemoteError&);             // a RemoteException<E>
};
MPROC_API void register_remote_type(RemoteType type);
MPROC_API std::string demangled_name(const std::type_info& type);

template <class E>
bool remote_catches(const std::exception_ptr& p) noexcept {
  try {
    std::rethrow_exception(p);
  } catch (const E&) {
    return true;
  } catch (...) {
    return false;
  }
}
template <class E>
std::exception_ptr remote_sample() {
  return std::make_exception_ptr(remote_base<E>("", std::string(), std::error_code()));
}
template <class E>
std::exception_ptr remote_make(const RemoteError& details) {
  return std::make_exception_ptr(RemoteException<E>(details));
}

}  // namespace detail

/// Makes a task's exception of type E (or of a type derived from E that is not
/// registered itself) reach the caller of a process or mpi pool as RemoteException<E>,
/// so that `catch (const E&)` catches it. E derives from std::exception, is not final,
/// and has a constructor from the message string, E(const std::string&) or
/// E(const char*): the caller's copy is E(text), where text is RemoteError::what().
///
/// The worker decides which registered type a task's exception is, so register before the
/// workers start: before the Pool or executor is created (process workers are forked
/// then and see the registry as it was), or at static initialisation with
/// MPROC_REGISTER_EXCEPTION (the mpi backend's worker ranks never run main(), so only
/// that reaches them). Registering a type twice is harmless. Thread-safe.
template <class E>
void register_exception() {
  static_assert(std::is_base_of_v<std::exception, E>,
                "mproc::register_exception<E>: E must derive from std::exception");
  static_assert(!std::is_final_v<E>,
                "mproc::register_exception<E>: E must not be final (the caller's copy is a "
                "RemoteException<E>, which derives from E)");
  static_assert(detail::remote_base_ok<E>,
                "mproc::register_exception<E>: E needs a constructor from a message string, "
                "E(const std::string&) or E(const char*), to be rebuilt in the caller");
  detail::register_remote_type({detail::demangled_name(typeid(E)), &detail::remote_catches<E>,
                                &detail::remote_sample<E>, &detail::remote_make<E>});
}

#define MPROC_DETAIL_CAT2(a, b) a##b
#define MPROC_DETAIL_CAT(a, b) MPROC_DETAIL_CAT2(a, b)
/// At namespace scope: register_exception<E>() at static initialisation.
#define MPROC_REGISTER_EXCEPTION(...)                                                  \
  [[maybe_unused]] static const bool MPROC_DETAIL_CAT(mproc_registered_exception_,      \
                                                      __COUNTER__) =                    \
      (::mproc::register_exception<__VA_ARGS__>(), true)

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
