// The registry of the types a task's exception may be rethrown as, and the two ends of
// a failure's trip: RemoteFailure::current() in the worker, RemoteFailure::error() in
// the caller.
#include "pool/remote_failure.hpp"

#include <cxxabi.h>

#include <algorithm>
#include <cstdlib>
#include <future>
#include <ios>
#include <memory>
#include <mutex>
#include <new>
#include <stdexcept>
#include <system_error>
#include <utility>

#include "mproc/error.hpp"
#include "os/platform.hpp"
#include "os/traceback.hpp"

namespace mproc::detail {
namespace {

struct Registry {
  std::mutex mutex;
  std::vector<RemoteType> types;  // in registration order

  template <class E>
  void add() {
    types.push_back({demangled_name(typeid(E)), &remote_catches<E>, &remote_sample<E>,
                     &remote_make<E>});
  }
};

Registry& registry() {
  // Never destroyed: a worker may describe a failure while static destructors run.
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
  std::lock_guard lock(reg.mutex);
  for (auto& t : reg.types)
    if (t.name == type.name) return;
  reg.types.push_back(std::move(type));
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

  std::vector<const RemoteType*> matches;
  Registry& reg = registry();
  {
    std::lock_guard lock(reg.mutex);
    for (const auto& t : reg.types)
      if (t.catches(p)) matches.push_back(&t);
    // Most derived first: a type is below every match that catches an object of it
    // (out_of_range is caught by logic_error's handler, not the other way round).
    std::vector<std::pair<std::size_t, const RemoteType*>> ranked;
    for (const RemoteType* m : matches) {
      const std::exception_ptr sample = m->sample();
      std::size_t above = 0;
      for (const RemoteType* n : matches)
        if (n != m && n->catches(sample)) ++above;
      ranked.emplace_back(above, m);
    }
    std::stable_sort(ranked.begin(), ranked.end(),
                     [](const auto& a, const auto& b) { return a.first > b.first; });
    for (const auto& [above, m] : ranked) f.kinds.push_back(m->name);
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
  Registry& reg = registry();
  std::lock_guard lock(reg.mutex);
  for (const auto& kind : kinds)
    for (const auto& t : reg.types)
      if (t.name == kind) return t.make(details);
  return std::make_exception_ptr(details);
}

}  // namespace mproc::detail
