// Runtime without MPI knowledge: the MPI side comes from libmproc_mpi as MpiHooks.
#include "mproc/runtime.hpp"

#include <atomic>
#include <exception>
#include <stdexcept>

namespace mproc {
namespace {

std::atomic<const detail::MpiHooks*> g_hooks{nullptr};
std::atomic<bool> g_runtime{false};
std::terminate_handler g_previous_terminate = nullptr;

/// An uncaught exception on rank 0 must not leave the other ranks waiting: release them
/// first, then terminate as before.
[[noreturn]] void terminate_releasing_ranks() noexcept {
  if (const auto* h = g_hooks.load()) h->stop();
  if (g_previous_terminate) g_previous_terminate();
  std::abort();
}

void stop_at_exit() noexcept {
  if (const auto* h = g_hooks.load()) h->stop();
}

}  // namespace

namespace detail {
const MpiHooks* active_mpi_hooks() noexcept { return g_hooks.load(); }
}  // namespace detail

Runtime::Runtime(int& argc, char**& argv, const detail::MpiHooks* hooks) {
  if (g_runtime.exchange(true))
    throw std::logic_error("mproc::Runtime: only one Runtime may exist at a time");
  if (hooks == nullptr) return;
  // Set first: tasks on the other ranks ask Runtime::rank(), and those ranks never return.
  g_hooks.store(hooks);
  hooks->start(argc, argv);  // returns on rank 0 only
  g_previous_terminate = std::set_terminate(terminate_releasing_ranks);
  static const bool registered = [] { return std::atexit(stop_at_exit) == 0; }();
  (void)registered;
}

Runtime::~Runtime() {
  if (const auto* h = g_hooks.exchange(nullptr)) {
    h->stop();
    std::set_terminate(g_previous_terminate);
  }
  g_runtime.store(false);
}

int Runtime::rank() noexcept {
  const auto* h = g_hooks.load();
  return h ? h->rank() : 0;
}

int Runtime::size() noexcept {
  const auto* h = g_hooks.load();
  return h ? h->size() : 1;
}

bool Runtime::mpi() noexcept {
  const auto* h = g_hooks.load();
  return h != nullptr && h->initialized();
}

}  // namespace mproc
