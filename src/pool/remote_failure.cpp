// The registry of the types a task's exception may be rethrown as, and the two ends of
// a failure's trip: RemoteFailure::current() in the worker, RemoteFailure::error() in
// the caller.
#include "pool/remote_failure.hpp"

#include <cxxabi.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <future>
#include <ios>
#include <memory>
#include <mutex>
#include <new>
#include <stdexcept>
#include <system_error>
#include <typeinfo>
#include <unordered_map>
#include <utility>

#include "mproc/error.hpp"
#include "os/platform.hpp"
#include "os/traceback.hpp"

namespace mproc::detail {
namespace {

// Read by every worker on every failure, written at registration. A worker is forked
// from a process that may have had another thread inside register_remote_type, so the
// readers take no lock: the types form a list that only grows at its head, each node
// complete before a release store publishes it. Writers take `writers` among themselves.
struct Node {
  RemoteType type;
  const Node* next;
};

struct Registry {
  std::mutex writers;
  std::atomic<const Node*> head{nullptr};
  std::atomic<std::size_t> count{0};

  void push(RemoteType t) {
    const Node* n = new Node{std::move(t), head.load(std::memory_order_relaxed)};
    head.store(n, std::memory_order_release);
    count.fetch_add(1, std::memory_order_release);
  }
  template <class E>
  void add() {
    push({demangled_name(typeid(E)), &remote_catches<E>, &remote_sample<E>, &remote_make<E>});
  }
  template <class Fn>
  void for_each(Fn fn) const {
    for (const Node* n = head.load(std::memory_order_acquire); n != nullptr; n = n->next)
      fn(n->type);
  }
};

Registry& registry() {
  // Never destroyed (nor its nodes): a worker may describe a failure while static
  // destructors run.
  static Registry* const r = [] {
    auto* reg = new Registry;
    reg->add<std::logic_error>();
    reg->add<std::invalid_argument>();
    reg->add<std::domain_error>();
    reg->add<std::length_error>();
    reg->add<std::out_of_range>();
    reg->add<std::runtime_error>();
    reg->add<std::range_error>();
    reg->add<std::overflow_error>();
    reg->add<std::underflow_error>();
    reg->add<std::system_error>();
    reg->add<std::bad_alloc>();
    reg->add<Error>();
    reg->add<SerializationError>();
    reg->add<Cancelled>();
    reg->add<PoolClosed>();
    reg->add<BrokenPool>();
    reg->add<TimeoutError>();
    reg->add<Closed>();
    reg->add<BrokenBarrierError>();
    reg->add<SharedStateError>();
    return reg;
  }();
  return *r;
}
// Built when the library loads, before any pool forks.
[[maybe_unused]] const bool registry_ready = (registry(), true);

/// The registered types an exception of dynamic type `p`'s is, most derived first.
std::vector<std::string> known_kinds(const std::exception_ptr& p) {
  std::vector<const RemoteType*> matches;
  const Registry& reg = registry();
  reg.for_each([&](const RemoteType& t) {
    if (t.catches(p)) matches.push_back(&t);
  });
  // Most derived first: a type is below every match that catches an object of it
  // (out_of_range is caught by logic_error's handler, not the other way round).
  std::vector<std::pair<std::size_t, const RemoteType*>> ranked;
  for (const RemoteType* m : matches) {
    std::size_t above = 0;
    try {
      const std::exception_ptr sample = m->sample();
      for (const RemoteType* n : matches)
        if (n != m && n->catches(sample)) ++above;
    } catch (...) {
      // A user type whose constructor throws: it cannot be rebuilt in the caller either.
      continue;
    }
    ranked.emplace_back(above, m);
  }
  std::stable_sort(ranked.begin(), ranked.end(),
                   [](const auto& a, const auto& b) { return a.first > b.first; });
  std::vector<std::string> kinds;
  for (const auto& [above, m] : ranked) kinds.push_back(m->name);
  return kinds;
}

ErrorCategory category_of(const std::error_category& c) {
  if (c == std::generic_category()) return ErrorCategory::generic;
  if (c == std::system_category()) return ErrorCategory::system;
  if (c == std::iostream_category()) return ErrorCategory::iostream;
  if (c == std::future_category()) return ErrorCategory::future;
  return ErrorCategory::none;
}

std::error_code code_of(std::int32_t value, ErrorCategory c) {
  switch (c) {
    case ErrorCategory::generic: return {value, std::generic_category()};
    case ErrorCategory::system: return {value, std::system_category()};
    case ErrorCategory::iostream: return {value, std::iostream_category()};
    case ErrorCategory::future: return {value, std::future_category()};
    case ErrorCategory::none: break;
  }
  return {};
}

}  // namespace

void register_remote_type(RemoteType type) {
  Registry& reg = registry();
  std::lock_guard lock(reg.writers);
  bool known = false;
  reg.for_each([&](const RemoteType& t) { known = known || t.name == type.name; });
  if (!known) reg.push(std::move(type));
}

std::string demangled_name(const std::type_info& type) {
  int status = 0;
  std::unique_ptr<char, decltype(&std::free)> name(
      abi::__cxa_demangle(type.name(), nullptr, nullptr, &status), &std::free);
  return status == 0 && name ? std::string(name.get()) : std::string(type.name());
}

RemoteFailure RemoteFailure::current() {
  RemoteFailure f;
  // First, while the recorded stack is still the task's own.
  f.traceback = take_throw_trace();
  f.type = current_exception_type_name();
  f.what = current_exception_message();
  const std::exception_ptr p = std::current_exception();
  if (!p) return f;

  // The types depend on the exception's dynamic type alone: work them out once per type
  // (each costs a rethrow per registered type), again after a registration.
  struct Cached {
    std::size_t registered;
    std::vector<std::string> kinds;
  };
  // Keyed by the mangled name, which names one type in every module (a type_info's
  // address need not).
  thread_local std::unordered_map<std::string, Cached> cache;
  const std::size_t registered = registry().count.load(std::memory_order_acquire);
  const std::type_info* t = abi::__cxa_current_exception_type();
  const std::string key = t != nullptr ? t->name() : "";
  auto it = cache.find(key);
  if (t != nullptr && it != cache.end() && it->second.registered == registered) {
    f.kinds = it->second.kinds;
  } else {
    f.kinds = known_kinds(p);
    if (t != nullptr) cache[key] = Cached{registered, f.kinds};
  }
  try {
    std::rethrow_exception(p);
  } catch (const std::system_error& e) {
    f.code = e.code().value();
    f.category = category_of(e.code().category());
    if (f.category == ErrorCategory::none) {
      // A category the caller cannot name: the code cannot be rebuilt, so neither can a
      // std::system_error; its bases (std::runtime_error) still can.
      std::erase(f.kinds, demangled_name(typeid(std::system_error)));
      f.code = 0;
    }
  } catch (...) {
  }
  return f;
}

std::exception_ptr RemoteFailure::error(std::optional<std::size_t> index, pid_t pid) && {
  const RemoteException<Error> details(std::move(type), std::move(what), std::move(traceback),
                                       index, pid, code_of(code, category));
  for (const auto& kind : kinds) {
    const RemoteType* found = nullptr;
    registry().for_each([&](const RemoteType& t) {
      if (found == nullptr && t.name == kind) found = &t;
    });
    if (found == nullptr) continue;  // registered in the worker only: try its base
    try {
      return found->make(details);
    } catch (...) {
      // The type's constructor threw: its base will do.
    }
  }
  return std::make_exception_ptr(details);
}

}  // namespace mproc::detail
