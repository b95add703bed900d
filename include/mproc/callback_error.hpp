// Where the exceptions of user callbacks go: a Future's done callbacks and a map's
// progress callback run in a pool's thread, where an exception has nobody to reach. Each
// one goes to the handler installed here (by default one line on stderr); it never
// reaches the pool and is never swallowed silently.
#pragma once

#include <exception>
#include <functional>

#include "export.hpp"

namespace mproc {

/// Receives the exceptions thrown by done callbacks and progress callbacks.
using CallbackErrorHandler = std::function<void(std::exception_ptr)>;

/// Installs `handler` for exceptions thrown by done callbacks and progress callbacks and
/// returns the previous one; an empty handler restores the default, which prints one
/// line on stderr ("mproc: exception in a Future done callback: <type>: <what>"). The
/// handler runs in the thread that ran the callback and must not throw. Thread-safe.
MPROC_API CallbackErrorHandler set_callback_error_handler(CallbackErrorHandler handler);

namespace detail {

/// Reports an exception thrown by a callback to the installed handler. Never throws.
/// Thread-safe.
MPROC_API void report_callback_error(std::exception_ptr error) noexcept;

}  // namespace detail
}  // namespace mproc
