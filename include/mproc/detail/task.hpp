// How a task travels to a worker process: a pointer to a TaskVTable (code, identical in
// every worker because workers are forked from this program) plus the callable's state as
// bytes, plus each item's arguments as bytes. Internal to mproc.
#pragma once

#include <atomic>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <functional>
#include <memory>
#include <new>
#include <optional>
#include <span>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "../bind.hpp"
#include "../export.hpp"
#include "../serialize.hpp"

namespace mproc {

/// Where a task is while it runs in a pool worker (a process or a thread): its index in
/// the input and the chunk that carried it. Python has no equivalent; useful for logging
/// and tests.
struct TaskInfo {
  std::size_t index;
  std::size_t chunk_first;  ///< index of the chunk's first item
  std::size_t chunk_size;
};

/// The task this pool worker is running, or none outside a pool task.
MPROC_API std::optional<TaskInfo> current_task() noexcept;

}  // namespace mproc

namespace mproc::detail {

/// The calling thread's current_task() slot, for the pools to update cheaply.
MPROC_API std::optional<TaskInfo>* current_task_slot() noexcept;

template <class T>
inline constexpr bool is_bound_call_v = false;
template <class F, class... B>
inline constexpr bool is_bound_call_v<BoundCall<F, B...>> = true;

/// A callable that can be shipped to a worker: its state is a plain copy of bytes
/// (function pointers, lambdas capturing nothing or numbers), or it is an mproc::bind
/// whose values are serialized. A lambda capturing a pointer or a reference is trivially
/// copyable too, so it is accepted, but the address means nothing in a worker process for
/// an object created after the Pool (see docs/pool.md, "What the workers see").
template <class F>
concept shippable = std::is_trivially_copyable_v<F> || is_bound_call_v<F>;

#define MPROC_DETAIL_REQUIRE_SHIPPABLE(F)                                                    \
  static_assert(::mproc::detail::shippable<F>,                                               \
                "mproc: this callable cannot be sent to a worker process: its state is "    \
                "not trivially copyable (for example a lambda capturing a std::string, a "  \
                "std::vector or an mproc::Value/Array/Queue/Lock handle by value). Capture " \
                "only numbers, never pointers or references (a worker has no copy of "      \
                "objects created after the pool started); pass the data as the item, or "   \
                "with mproc::bind(f, value, ...) (values and mproc::Value, Array, Queue, "   \
                "Lock and Manager dict/list handles, sent once per worker).")

template <class F>
inline constexpr bool is_function_pointer_v =
    std::is_pointer_v<F> && std::is_function_v<std::remove_pointer_t<F>>;

/// Whether the callable state being encoded or decoded on this thread is portable: a
/// function pointer in it travels as (module, offset) rather than as an address, for MPI
/// ranks whose program is loaded elsewhere. Set by PortableCode for the span of one job.
MPROC_API bool& portable_code() noexcept;

class PortableCode {
 public:
  explicit PortableCode(bool on) noexcept : saved_(portable_code()) { portable_code() = on; }
  ~PortableCode() { portable_code() = saved_; }
  PortableCode(const PortableCode&) = delete;
  PortableCode& operator=(const PortableCode&) = delete;

 private:
  bool saved_;
};

/// A code address as (module, offset) (16 bytes). Throws std::invalid_argument if no
/// loaded module contains it.
MPROC_API void encode_code_address(const void* address, std::vector<std::byte>& out);
/// The address in this process of what encode_code_address wrote. Throws
/// SerializationError if this process has no such module.
MPROC_API const void* decode_code_address(InputArchive& in);

/// Appends the state of `f` to `out`.
template <class F>
void encode_callable(const F& f, std::vector<std::byte>& out) {
  if constexpr (is_function_pointer_v<F>) {
    if (portable_code()) {
      encode_code_address(reinterpret_cast<const void*>(f), out);
      return;
    }
  }
  if constexpr (is_bound_call_v<F>) {
    encode_callable(f.function(), out);
    dump_into(out, f.values());
  } else if constexpr (std::is_empty_v<F>) {
    // A captureless lambda has no state to send (and its one byte is uninitialized).
  } else {
    // resize + memcpy, not insert(): g++ 12 -O3 warns falsely (-Wstringop-overflow)
    // about a range insert into a vector it has seen empty.
    const std::size_t n = out.size();
    out.resize(n + sizeof(F));
    std::memcpy(out.data() + n, std::addressof(f), sizeof(F));
  }
}

/// Rebuilds a callable from the bytes encode_callable wrote, consuming them from `in`.
template <class F>
std::unique_ptr<F> decode_callable(InputArchive& in) {
  if constexpr (is_bound_call_v<F>) {
    using Fn = typename F::function_type;
    std::unique_ptr<Fn> fn = decode_callable<Fn>(in);
    typename F::bound_type values{};
    in(values);
    return std::make_unique<F>(*fn, std::move(values));
  } else if constexpr (is_function_pointer_v<F>) {
    const void* address = nullptr;
    if (portable_code())
      address = decode_code_address(in);
    else
      in.read_bytes(&address, sizeof address);
    return std::make_unique<F>(reinterpret_cast<F>(const_cast<void*>(address)));
  } else {
    // F is trivially copyable, hence an implicit-lifetime type: copying its bytes into
    // suitably aligned storage creates the object ([intro.object]/10).
    // Allocated as `new F` would be, so that unique_ptr's `delete` matches it: the
    // aligned operator new only for over-aligned F.
    void* storage = nullptr;
    if constexpr (alignof(F) > __STDCPP_DEFAULT_NEW_ALIGNMENT__)
      storage = ::operator new(sizeof(F), std::align_val_t{alignof(F)});
    else
      storage = ::operator new(sizeof(F));
    if constexpr (!std::is_empty_v<F>) in.read_bytes(storage, sizeof(F));
    return std::unique_ptr<F>(std::launder(static_cast<F*>(storage)));
  }
}

/// A job's shipped state: one byte saying whether it is portable (for MPI ranks), then
/// the callable's state.
template <class F>
void encode_job_callable(const F& f, std::vector<std::byte>& out, bool portable) {
  out.push_back(std::byte{portable});
  PortableCode scope(portable);
  encode_callable(f, out);
}

/// Reads the marker encode_job_callable wrote and makes the rest of `in` decode as it says.
class JobStateScope {
 public:
  explicit JobStateScope(InputArchive& in) : scope_(read_marker(in)) {}

 private:
  static bool read_marker(InputArchive& in) {
    std::byte marker{};
    in.read_bytes(&marker, 1);
    return marker != std::byte{0};
  }
  PortableCode scope_;
};

/// The functions a worker runs for one job. One static instance exists per instantiation;
/// its address travels to the workers.
struct TaskVTable {
  /// Rebuilds the job's callable from its shipped state.
  void* (*create)(std::span<const std::byte> state);
  void (*destroy)(void* fn) noexcept;
  /// Decodes one item's arguments, runs the callable, encodes the result.
  void (*call)(void* fn, InputArchive& args, OutputArchive& result);
  /// map_reduce: runs the map on one item and folds the result into *acc (created on the
  /// first item). Null for other jobs.
  void (*fold)(void* fn, InputArchive& args, void** acc);
  /// map_reduce: encodes *acc and destroys it.
  void (*finish)(void* acc, OutputArchive& out);
  void (*discard)(void* acc) noexcept;
  /// For a map whose argument and result are each their own wire encoding (is_bulk_v: a
  /// run of them is one memcpy): runs `count` items whose arguments lie back to back at
  /// `in` (packed_in bytes each), writing the results back to back at `out` (packed_out
  /// bytes each), and setting info->index to each item's index as it runs. Before each
  /// item it release-stores index + 1 in `*running` (so every result before that item's
  /// is whole), and once the run is over how many results it wrote in `*written` (left
  /// 0 until then): a parent that finds the worker dead knows which item was running and
  /// which results in `out` are whole, without a second store per item. Returns how many
  /// items succeeded; if fewer than `count`, the next one threw and `error` holds its
  /// exception. Null for other jobs.
  std::size_t (*call_packed)(void* fn, const std::byte* in, std::byte* out, std::size_t count,
                             TaskInfo* info, std::exception_ptr& error,
                             std::atomic<std::uint64_t>* running,
                             std::atomic<std::uint64_t>* written) = nullptr;
  std::uint32_t packed_in = 0;
  std::uint32_t packed_out = 0;
  /// For a map over an integer range (mproc::range) whose result is its own encoding or
  /// void: as call_packed, but the arguments are computed, not read: item k's is
  /// v0 + k * step (in Arg's two's complement bits), so a chunk travels as its first
  /// index and count alone. Results are packed_out bytes each (0 for void). Null for
  /// other jobs.
  std::size_t (*call_index)(void* fn, std::uint64_t v0, std::uint64_t step, std::byte* out,
                            std::size_t count, TaskInfo* info, std::exception_ptr& error,
                            std::atomic<std::uint64_t>* running,
                            std::atomic<std::uint64_t>* written) = nullptr;
};

template <class F>
void destroy_callable(void* p) noexcept {
  if constexpr (is_bound_call_v<F>) {
    delete static_cast<F*>(p);
  } else {
    static_cast<F*>(p)->~F();
    // The operator delete matching decode_callable's operator new.
    if constexpr (alignof(F) > __STDCPP_DEFAULT_NEW_ALIGNMENT__)
      ::operator delete(p, std::align_val_t{alignof(F)});
    else
      ::operator delete(p);
  }
}

/// How an item's decoded arguments reach the callable: as one argument (map) or unpacked
/// from a tuple (starmap, apply).
enum class CallKind { single, unpack };

template <CallKind kind, class F, class Arg>
decltype(auto) invoke_item(F& f, Arg&& arg) {
  if constexpr (kind == CallKind::single)
    return std::invoke(f, std::forward<Arg>(arg));
  else
    return std::apply(f, std::forward<Arg>(arg));
}

template <CallKind kind, class F, class Arg>
using item_result_t = std::decay_t<decltype(invoke_item<kind>(std::declval<F&>(),
                                                               std::declval<Arg>()))>;

/// sizeof(T), 0 for void: the packed sizes of a TaskVTable.
template <class T>
inline constexpr std::uint32_t packed_size_v = static_cast<std::uint32_t>(sizeof(T));
template <>
inline constexpr std::uint32_t packed_size_v<void> = 0;

template <CallKind kind, class F, class Arg>
struct Trampoline {
  using R = item_result_t<kind, F, Arg>;

  static void* create(std::span<const std::byte> state) {
    InputArchive in(state);
    JobStateScope scope(in);
    return decode_callable<F>(in).release();
  }
  static void call(void* fn, InputArchive& args, OutputArchive& result) {
    Arg arg{};
    args(arg);
    if constexpr (std::is_void_v<R>) {
      invoke_item<kind>(*static_cast<F*>(fn), std::move(arg));
    } else {
      R r = invoke_item<kind>(*static_cast<F*>(fn), std::move(arg));
      result(r);
    }
  }
  static constexpr bool packable = [] {
    if constexpr (std::is_void_v<R>)
      return false;
    else
      return is_bulk_v<Arg> && is_bulk_v<R>;
  }();
  /// Whether a map over an integer range can run from indices alone (call_index).
  static constexpr bool index_packable = [] {
    if constexpr (kind != CallKind::single || !std::is_integral_v<Arg> ||
                  std::is_same_v<Arg, bool>)
      return false;
    else if constexpr (std::is_void_v<R>)
      return true;
    else
      return is_bulk_v<R>;
  }();

  /// The loop of call_packed and call_index: item i's argument is arg_at(i).
  template <class ArgAt>
  static std::size_t run_items(void* fn, ArgAt arg_at, std::byte* out, std::size_t count,
                               TaskInfo* info, std::exception_ptr& error,
                               std::atomic<std::uint64_t>* running,
                               std::atomic<std::uint64_t>* written) {
    auto& f = *static_cast<F*>(fn);
    const std::size_t first = info->index;
    for (std::size_t i = 0; i < count; ++i) {
      info->index = first + i;
      running->store(first + i + 1, std::memory_order_release);
      try {
        if constexpr (std::is_void_v<R>) {
          invoke_item<kind>(f, arg_at(i));
        } else {
          const R r = invoke_item<kind>(f, arg_at(i));
          std::memcpy(out + i * sizeof(R), &r, sizeof(R));
        }
      } catch (...) {
        error = std::current_exception();
        written->store(i, std::memory_order_release);
        return i;
      }
    }
    written->store(count, std::memory_order_release);
    return count;
  }
  static std::size_t call_packed(void* fn, const std::byte* in, std::byte* out,
                                 std::size_t count, TaskInfo* info, std::exception_ptr& error,
                                 std::atomic<std::uint64_t>* running,
                                 std::atomic<std::uint64_t>* written) {
    if constexpr (packable) {
      const auto arg_at = [in](std::size_t i) {
        Arg arg;
        std::memcpy(&arg, in + i * sizeof arg, sizeof arg);
        return arg;
      };
      return run_items(fn, arg_at, out, count, info, error, running, written);
    } else {
      (void)fn, (void)in, (void)out, (void)info, (void)error, (void)running, (void)written;
      return count;
    }
  }
  static std::size_t call_index(void* fn, std::uint64_t v0, std::uint64_t step,
                                std::byte* out, std::size_t count, TaskInfo* info,
                                std::exception_ptr& error, std::atomic<std::uint64_t>* running,
                                std::atomic<std::uint64_t>* written) {
    if constexpr (index_packable) {
      // Unsigned arithmetic wraps; the conversion back to a signed Arg is modular (C++20).
      const auto arg_at = [v0, step](std::size_t i) {
        return static_cast<Arg>(v0 + static_cast<std::uint64_t>(i) * step);
      };
      return run_items(fn, arg_at, out, count, info, error, running, written);
    } else {
      (void)fn, (void)v0, (void)step, (void)out, (void)info, (void)error, (void)running,
          (void)written;
      return count;
    }
  }
  static constexpr TaskVTable vtable{&create,
                                     &destroy_callable<F>,
                                     &call,
                                     nullptr,
                                     nullptr,
                                     nullptr,
                                     packable ? &call_packed : nullptr,
                                     packable ? packed_size_v<Arg> : 0,
                                     packable || index_packable ? packed_size_v<R> : 0,
                                     index_packable ? &call_index : nullptr};
};

/// The callable of a map_reduce job: the map and the reduction, shipped together.
template <class M, class Rd>
struct MapReduceCall {
  M map;
  Rd reduce;
};

/// Folds `r` into `acc` with `reduce`: in place when reduce(acc&, r) is callable and returns
/// nothing (merging maps), else acc = reduce(move(acc), move(r)).
template <class Rd, class R>
void fold_into(Rd& reduce, R& acc, R&& r) {
  if constexpr (std::is_invocable_r_v<void, Rd&, R&, R&&> &&
                std::is_void_v<std::invoke_result_t<Rd&, R&, R&&>>)
    std::invoke(reduce, acc, std::move(r));
  else
    acc = std::invoke(reduce, std::move(acc), std::move(r));
}

/// What the map_reduce and fold trampolines share: their callable `Fn` and a worker's
/// accumulator `R` live on the heap; the accumulator is sent at the end (finish) or
/// dropped (discard); items go through fold(), never call().
template <class Fn, class R>
struct AccumulatingTrampoline {
  static void destroy(void* fn) noexcept { delete static_cast<Fn*>(fn); }
  static void call(void*, InputArchive&, OutputArchive&) {}
  static void finish(void* acc, OutputArchive& out) {
    std::unique_ptr<R> r(static_cast<R*>(acc));
    out(*r);
  }
  static void discard(void* acc) noexcept { delete static_cast<R*>(acc); }
};

template <CallKind kind, class M, class Rd, class Arg>
struct ReduceTrampoline : AccumulatingTrampoline<MapReduceCall<M, Rd>, item_result_t<kind, M, Arg>> {
  using Fn = MapReduceCall<M, Rd>;
  using R = item_result_t<kind, M, Arg>;
  using Base = AccumulatingTrampoline<Fn, R>;

  static void* create(std::span<const std::byte> state) {
    InputArchive in(state);
    JobStateScope scope(in);
    std::unique_ptr<M> m = decode_callable<M>(in);
    std::unique_ptr<Rd> rd = decode_callable<Rd>(in);
    return new Fn{*m, *rd};
  }
  static void fold(void* fn, InputArchive& args, void** acc) {
    auto& f = *static_cast<Fn*>(fn);
    Arg arg{};
    args(arg);
    R r = invoke_item<kind>(f.map, std::move(arg));
    if (*acc == nullptr)
      *acc = new R(std::move(r));
    else
      fold_into(f.reduce, *static_cast<R*>(*acc), std::move(r));
  }
  static constexpr TaskVTable vtable{&create,       &Base::destroy, &Base::call,
                                     &fold,         &Base::finish,  &Base::discard,
                                     nullptr,       0,              0};
};

template <class M, class Rd>
void encode_callable(const MapReduceCall<M, Rd>& f, std::vector<std::byte>& out) {
  encode_callable(f.map, out);
  encode_callable(f.reduce, out);
}

/// The callable of a fold job: the accumulator's starting value, the fold of one item into
/// it, and the combination of two accumulators, shipped together.
template <class R, class Fd, class Cb>
struct FoldCall {
  R init;
  Fd fold;
  Cb combine;
};

/// Folds `item` into `acc` with `fold`: in place when fold(acc&, item) returns nothing,
/// else acc = fold(move(acc), item).
template <class Fd, class R, class Arg>
void fold_item(Fd& fold, R& acc, Arg&& item) {
  if constexpr (std::is_invocable_v<Fd&, R&, Arg&&> &&
                std::is_void_v<std::invoke_result_t<Fd&, R&, Arg&&>>)
    std::invoke(fold, acc, std::forward<Arg>(item));
  else
    acc = std::invoke(fold, std::move(acc), std::forward<Arg>(item));
}

/// Pool::fold in a worker: each item goes straight into the worker's accumulator, which
/// starts as a copy of `init`; no partial per item.
template <class R, class Fd, class Cb, class Arg>
struct FoldTrampoline : AccumulatingTrampoline<FoldCall<R, Fd, Cb>, R> {
  using Fn = FoldCall<R, Fd, Cb>;
  using Base = AccumulatingTrampoline<Fn, R>;

  static void* create(std::span<const std::byte> state) {
    InputArchive in(state);
    JobStateScope scope(in);
    R init{};
    in(init);
    std::unique_ptr<Fd> fd = decode_callable<Fd>(in);
    std::unique_ptr<Cb> cb = decode_callable<Cb>(in);
    return new Fn{std::move(init), *fd, *cb};
  }
  static void fold(void* fn, InputArchive& args, void** acc) {
    auto& f = *static_cast<Fn*>(fn);
    Arg arg{};
    args(arg);
    if (*acc == nullptr) *acc = new R(f.init);
    fold_item(f.fold, *static_cast<R*>(*acc), std::move(arg));
  }
  static constexpr TaskVTable vtable{&create,       &Base::destroy, &Base::call,
                                     &fold,         &Base::finish,  &Base::discard,
                                     nullptr,       0,              0};
};

template <class R, class Fd, class Cb>
void encode_callable(const FoldCall<R, Fd, Cb>& f, std::vector<std::byte>& out) {
  dump_into(out, f.init);
  encode_callable(f.fold, out);
  encode_callable(f.combine, out);
}

}  // namespace mproc::detail
