// What tests throw from tasks to check that an exception keeps its type across
// processes: user error types (two registered in task_errors.cpp, others not) and
// throw_kind, which throws one kind of exception per number. Outside any anonymous
// namespace, so that throw_kind is in the dynamic symbol table (the tests link with
// ENABLE_EXPORTS) and shows in the worker's stack trace.
#pragma once

#include <stdexcept>
#include <string>

/// A user's error, registered: it arrives as itself on every backend.
struct ConfigError : std::runtime_error {
  explicit ConfigError(const std::string& what) : std::runtime_error(what) {}
};
/// Registered before its base: the most derived type wins whatever the order.
struct MissingKeyError : ConfigError {
  explicit MissingKeyError(const std::string& what) : ConfigError(what) {}
};
/// Not registered: they arrive as their most derived registered base.
struct UnregisteredError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
struct BadSlot : std::out_of_range {
  using std::out_of_range::out_of_range;
};
struct DeepKeyError : MissingKeyError {
  using MissingKeyError::MissingKeyError;
};

/// Throws kind `k` (k < 100) with message "kind k", returns larger values unchanged:
///  0..8 std::logic_error, invalid_argument, domain_error, length_error, out_of_range,
///       runtime_error, range_error, overflow_error, underflow_error
///  9 std::system_error(ENOENT, generic), 10 a failed new[] (std::bad_array_new_length),
///  11..13 mproc::SerializationError, SharedStateError, TimeoutError,
///  14 ConfigError, 15 MissingKeyError, 16 UnregisteredError, 17 BadSlot,
///  18 DeepKeyError, 19 a failed open(2) as std::system_error(errno, system), 20 `throw 42`,
///  21 std::system_error(7, a category of the program's own).
int throw_kind(int k);
