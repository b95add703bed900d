// The task the calling thread is running, for current_task(): set by a process worker
// (pool_worker.cpp) around each item and by the thread pool's jobs (TaskInfoScope in
// include/mproc/detail/thread_jobs.hpp), so that a task can ask on every backend.
#include <optional>

#include "mproc/detail/task.hpp"

namespace mproc {
namespace {

thread_local std::optional<TaskInfo> tls_current_task;

}  // namespace

std::optional<TaskInfo> current_task() noexcept { return tls_current_task; }

namespace detail {

std::optional<TaskInfo>* current_task_slot() noexcept { return &tls_current_task; }

}  // namespace detail
}  // namespace mproc
