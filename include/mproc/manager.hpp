// mproc::Manager: Python's multiprocessing.Manager().dict(), .list() and .Namespace(),
// without the server.
//
// Python's Manager is a server process that owns the dicts and lists; every operation is a
// round trip over a socket. An mproc Manager is instead one shared-memory arena (an
// anonymous memfd, mode 0600, sparse: ManagerOptions::capacity is address space, and pages
// exist only once written) holding every dict and list made from it, guarded by one
// robust process-shared lock in the arena. Every process operates on the arena directly,
// so an operation costs a lock, a hash and a few memory accesses instead of a round trip.
//
//   mproc::Manager manager;
//   auto counts = manager.dict<std::string, long>();
//   mproc::Process p([counts]() mutable {
//     counts.merge(std::map<std::string, long>{{"apple", 2}, {"pear", 1}});  // d[k] += v
//   });
//   p.start(); p.join();
//   counts.at("apple");  // 2
//
// Handles. Manager, SharedDict, SharedList and SharedNamespace are handles: copies refer to the same
// object, a forked Process inherits them, and they are serializable, so they can be
// arguments and results of Pool tasks and executors (mproc::bind(f, dict), starmap
// tuples), also when created after the Pool. The arena goes away with the last handle (to
// the manager or to any dict or list in it) in the last process, whatever ended the
// processes. A dict or list lives as long as its arena: dropping its handles does not free
// it (clear() returns its entries' memory).
//
// Values. Keys and values are any mproc-serializable, default-constructible types (see
// serialize.hpp); they are stored encoded, and keys are compared by their encoded bytes
// (so two keys are equal exactly when their encodings are). get() and friends return
// copies decoded in the caller. Handles to one dict must agree on its key and value types;
// decoding a handle as another SharedDict<K, V> throws SharedStateError.
//
// Ordering. Every operation takes the arena's lock, so operations on the objects of one
// manager are linearizable: once set() (or any mutation) has returned in one process or
// thread, every operation that starts afterwards, in any process, sees it. Each operation
// is atomic on its own; a read-modify-write composed of several calls (get, then set) is
// not, and loses updates when processes interleave. Make it one call with update() or
// merge(), or hold an mproc::Lock around the calls. The callables given to update() and
// merge() run with the arena's lock held: they must not use any dict or list of the same
// manager (that throws std::logic_error rather than deadlocking), and should be quick.
// No operation blocks except to take the lock, which others hold for one operation each.
//
// Crash consistency. A process that dies inside an operation (SIGKILL included) neither
// hangs nor corrupts the others. The lock is robust: the next process to take it is told
// its holder died. Every mutation commits with one aligned 8-byte store: a new entry is
// written in full, then linked into the hash table by one store; a value is replaced by
// writing it beside the old one (inline for encodings of up to 8 bytes, else in a new
// block) and switching to it with one store; the table grows by building a new one in full
// and swapping one offset; the allocator pops and bumps with single stores. A death before
// the commit leaves the old state, after it the new; what it costs at worst is a leak of
// the blocks the operation had just taken or was about to free (all of a dict's entries,
// for a clear()). Counters that no single store can cover (a dict's size, bytes_used())
// are recounted by the first operation to take the lock after a death, which walks every
// dict's table and the free lists once. merge() is atomic with respect to other
// processes, not to the merging process's own death: a merge interrupted by death is
// applied in part (each key either fully merged or untouched). SharedList::extend() is
// all-or-nothing.
//
// Memory. Blocks freed by erase(), clear() and value replacement go to size-class free
// lists and are reused, so a long run of set()/erase() on a bounded key set stays within
// bounded memory; freed blocks of 1 MiB and more are returned to the system. When the
// arena's capacity is exhausted, operations that need memory throw std::length_error and
// have changed nothing visible (a merge keeps the pairs before the one that failed).
//
// Every method of every class here is thread-safe and process-safe.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <ranges>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "detail/segment.hpp"
#include "detail/serialize_traits.hpp"
#include "export.hpp"
#include "serialize.hpp"

namespace mproc {

/// Settings of a Manager, as designated initializers: `Manager({.capacity = 1 << 30})`.
struct ManagerOptions {
  /// Bytes of address space for the arena (at least 64 KiB; at most 2^47). Memory is
  /// used only as it is written, so the default costs nothing up front. Where the kernel
  /// refuses to overcommit (vm.overcommit_memory = 2), ask for what the data needs.
  std::size_t capacity = std::size_t{64} << 30;
};

template <class K, class V>
class SharedDict;
template <class T>
class SharedList;
class SharedNamespace;

namespace detail {

/// A non-owning reference to a callable, for the callbacks the arena core makes while it
/// holds the lock. The callable must outlive the call it is passed to.
template <class Sig>
class FunctionRef;
template <class R, class... A>
class FunctionRef<R(A...)> {
 public:
  template <class F>
    requires(!std::is_same_v<std::remove_cvref_t<F>, FunctionRef> &&
             std::is_invocable_r_v<R, F&, A...>)
  FunctionRef(F& f) noexcept  // NOLINT(google-explicit-constructor): a parameter type
      : obj_(std::addressof(f)), call_([](void* obj, A... args) -> R {
          return (*static_cast<F*>(obj))(static_cast<A>(args)...);
        }) {}
  R operator()(A... args) const { return call_(obj_, static_cast<A>(args)...); }

 private:
  void* obj_;
  R (*call_)(void*, A...);
};

using ByteSpan = std::span<const std::byte>;

/// Encoded keys and values one after the other in `bytes`; entry i ends at ends[i]
/// (pairs alternate key, value).
struct EncodedRun {
  std::vector<std::byte> bytes;
  std::vector<std::uint64_t> ends;
};

/// Bytes a decoded handle's offset must leave before the end of its segment: the arena
/// header for a Manager, the object header for a dict or list.
inline constexpr std::uint64_t kManagerHeaderBytes = 2048;
inline constexpr std::uint64_t kManagerObjectBytes = 40;
/// A dict's or list's offset in the arena is a multiple of this; that it is the start of
/// one of the arena's objects is checked against the arena itself.
inline constexpr std::uint64_t kManagerObjectAlignment = 8;

/// Places inside the arena's operations where a test can make the process kill itself,
/// each between two stores of a mutation: what a SIGKILL there must not corrupt.
enum class ManagerCrashPoint : int {
  none = 0,
  block_taken,      ///< allocator: block popped or bumped, not yet counted in bytes_used
  block_freed,      ///< allocator: block pushed on its free list, still counted
  insert_written,   ///< dict insert: entry written, not yet linked
  insert_linked,    ///< dict insert: entry linked, size not yet counted
  table_installed,  ///< table growth: new table installed, old one not yet freed
  value_written,    ///< value replacement: new value written, not yet switched to
  value_switched,   ///< value replacement: switched, old value's block not yet freed
  erased,           ///< dict erase: entry unlinked, size not yet counted, not yet freed
  dict_detached,    ///< dict clear: table detached, entries not yet freed
  list_filled,      ///< list extend: elements written, size not yet published
};

/// The type-independent core of Manager, SharedDict and SharedList, in libmproc. The
/// templates encode and decode; the core stores bytes. Each call takes the arena lock
/// once. Throws std::logic_error on an empty handle, std::length_error when the arena is
/// full.
struct MPROC_API ManagerCore {
  using Updater = FunctionRef<ByteSpan(const ByteSpan* old)>;
  using Combiner = FunctionRef<ByteSpan(std::size_t index, ByteSpan old)>;

  static SharedRef create(std::size_t capacity);
  static void check_manager(const SharedRef& arena);
  static std::size_t bytes_used(const SharedRef& arena);
  static SharedRef new_dict(const SharedRef& arena, std::uint64_t type_id);
  static SharedRef new_list(const SharedRef& arena, std::uint64_t type_id);
  static void check_dict(const SharedRef& dict, std::uint64_t type_id);
  static void check_list(const SharedRef& list, std::uint64_t type_id);

  static bool dict_get(const SharedRef& dict, ByteSpan key, std::vector<std::byte>& value);
  static void dict_set(const SharedRef& dict, ByteSpan key, ByteSpan value);
  static bool dict_contains(const SharedRef& dict, ByteSpan key);
  static bool dict_erase(const SharedRef& dict, ByteSpan key);
  static std::size_t dict_size(const SharedRef& dict);
  static void dict_clear(const SharedRef& dict);
  /// Sets key to f(old value, or nullptr if absent), calling f with the lock held. The
  /// bytes f returns must stay valid until the core has stored them (after f returns).
  static void dict_update(const SharedRef& dict, ByteSpan key, Updater f);
  /// For each pair i of `pairs`: absent keys get the value, present ones op(i, old).
  static void dict_merge(const SharedRef& dict, const EncodedRun& pairs, Combiner op);
  /// Appends every key (and value) to `out`.
  static void dict_items(const SharedRef& dict, EncodedRun& out, bool with_values);

  /// Appends the values bytes[0, ends[0]), bytes[ends[0], ends[1]), ...
  static void list_extend(const SharedRef& list, ByteSpan bytes,
                          std::span<const std::uint64_t> ends);
  static bool list_get(const SharedRef& list, std::size_t index, std::vector<std::byte>& value);
  static bool list_set(const SharedRef& list, std::size_t index, ByteSpan value);
  static std::size_t list_size(const SharedRef& list);
  static void list_clear(const SharedRef& list);
  static void list_items(const SharedRef& list, EncodedRun& out);

  /// Fault injection for mproc's own tests: the calling process SIGKILLs itself the
  /// `nth` time (from 1) it reaches `point` inside an operation. Not for programs.
  static void crash_at_for_testing(ManagerCrashPoint point, int nth) noexcept;
};

/// A per-thread encoding buffer, so that small operations do not allocate. A lease holds
/// one of four per-thread buffers alone; a fifth lease at once (nested calls, such as an
/// update() callback using another Manager) gets a buffer of its own.
class ScratchBuffer {
 public:
  ScratchBuffer() noexcept {
    Pool& p = pool();
    for (int i = 0; i < kSlots; ++i) {
      if ((p.busy & (1u << i)) == 0) {
        p.busy |= 1u << i;
        slot_ = i;
        buf_ = &p.bufs[i];
        buf_->clear();
        return;
      }
    }
  }
  ~ScratchBuffer() {
    if (slot_ < 0) return;
    Pool& p = pool();
    // A huge value's buffer is not kept for the life of the thread.
    if (buf_->capacity() > kKeepBytes) *buf_ = std::vector<std::byte>();
    p.busy &= ~(1u << slot_);
  }
  ScratchBuffer(const ScratchBuffer&) = delete;
  ScratchBuffer& operator=(const ScratchBuffer&) = delete;

  std::vector<std::byte>& get() noexcept { return *buf_; }

 private:
  static constexpr int kSlots = 4;
  static constexpr std::size_t kKeepBytes = std::size_t{1} << 20;
  struct Pool {
    std::vector<std::byte> bufs[kSlots];
    unsigned busy = 0;
  };
  static Pool& pool() noexcept {
    thread_local Pool p;
    return p;
  }

  std::vector<std::byte> own_;
  std::vector<std::byte>* buf_ = &own_;
  int slot_ = -1;
};

template <class T>
ByteSpan encode_into(std::vector<std::byte>& buf, const T& value) {
  buf.clear();
  OutputArchive ar(buf);
  ar(value);
  return {buf.data(), buf.size()};
}

template <class T>
void append_encoded(EncodedRun& run, const T& value) {
  OutputArchive ar(run.bytes);
  ar(value);
  run.ends.push_back(run.bytes.size());
}

inline ByteSpan run_entry(const EncodedRun& run, std::size_t i) noexcept {
  const std::uint64_t begin = i == 0 ? 0 : run.ends[i - 1];
  return {run.bytes.data() + begin, static_cast<std::size_t>(run.ends[i] - begin)};
}

template <class T>
T decode_as(ByteSpan bytes) {
  T value{};
  loads_into(bytes, value);
  return value;
}

/// A 64-bit FNV-1a of the compiler's name for T: handles of one dict must agree on it.
template <class T>
constexpr std::uint64_t type_fingerprint() noexcept {
  std::uint64_t h = 0xcbf29ce484222325ULL;
  for (const char* s = raw_type_name<T>(); *s != '\0'; ++s) {
    h ^= static_cast<unsigned char>(*s);
    h *= 0x100000001b3ULL;
  }
  return h;
}

[[noreturn]] MPROC_API void throw_key_error();
[[noreturn]] MPROC_API void throw_attribute_error(std::string_view name);
[[noreturn]] MPROC_API void throw_attribute_type(std::string_view name, std::string_view held,
                                                 std::string_view wanted);
[[noreturn]] MPROC_API void throw_index_error(std::size_t index);

}  // namespace detail

/// A handle to a shared arena of dicts and lists (see the top of this file).
class MPROC_API Manager {
 public:
  /// A new arena with the default capacity (64 GiB of address space).
  /// Throws std::system_error if the system refuses the memory.
  Manager() : Manager(ManagerOptions{}) {}
  /// A new arena. Throws std::invalid_argument for a capacity above 2^47, and
  /// std::system_error if the system refuses it.
  explicit Manager(ManagerOptions options);

  // A handle: copies share the arena. No move operations are declared, so a "moved-from"
  // Manager is still a valid copy.
  Manager(const Manager&) = default;
  Manager& operator=(const Manager&) = default;
  ~Manager() = default;

  /// A new empty dict in this arena. Does not block beyond the arena lock. Throws
  /// std::length_error if the arena is full.
  template <class K, class V>
  SharedDict<K, V> dict() const;
  /// A new empty list in this arena. Throws std::length_error if the arena is full.
  template <class T>
  SharedList<T> list() const;
  /// A new namespace without attributes in this arena: Python's Manager().Namespace()
  /// (the underscore because `namespace` is a C++ keyword). Throws std::length_error if
  /// the arena is full.
  SharedNamespace namespace_() const;

  /// Bytes of the arena handed out to dicts, lists, their tables and entries (whole
  /// allocator blocks; the arena's own header is not counted). Blocks leaked by a process
  /// that died inside an operation stay counted.
  std::size_t bytes_used() const;

  template <class Archive>
  void serialize(Archive& ar) {
    if constexpr (Archive::is_saving) {
      ref_.save(ar);
    } else {
      ref_.load(ar, detail::kManagerHeaderBytes);
      detail::ManagerCore::check_manager(ref_);
    }
  }

 private:
  detail::SharedRef ref_;
};

/// Python's Manager().dict(): a hash map of encoded keys to encoded values in a Manager's
/// arena. Make one with Manager::dict<K, V>(). A default-constructed SharedDict is an
/// empty handle, useful only to decode into; its operations throw std::logic_error.
template <class K, class V>
class SharedDict {
  static_assert(
      serializable<K> && serializable<V>,
      "mproc::SharedDict: keys and values must be serializable (see mproc/serialize.hpp)");
  static_assert(std::is_default_constructible_v<K> && std::is_default_constructible_v<V>,
                "mproc::SharedDict: keys and values must be default-constructible");

 public:
  using key_type = K;
  using mapped_type = V;

  SharedDict() = default;
  SharedDict(const SharedDict&) = default;
  SharedDict& operator=(const SharedDict&) = default;
  ~SharedDict() = default;

  /// The value of k, or nullopt. Process-safe.
  std::optional<V> get(const K& k) const {
    detail::ScratchBuffer key;
    detail::ScratchBuffer value;
    if (!detail::ManagerCore::dict_get(ref_, detail::encode_into(key.get(), k), value.get()))
      return std::nullopt;
    return detail::decode_as<V>(value.get());
  }
  /// The value of k, or `fallback` (Python's d.get(k, default)).
  V get(const K& k, const V& fallback) const {
    std::optional<V> v = get(k);
    return v ? std::move(*v) : fallback;
  }
  /// The value of k. Throws std::out_of_range if k is absent (Python's KeyError).
  V at(const K& k) const {
    std::optional<V> v = get(k);
    if (!v) detail::throw_key_error();
    return std::move(*v);
  }
  /// d[k] = v. Throws std::length_error if the arena is full (nothing changes then).
  void set(const K& k, const V& v) const {
    detail::ScratchBuffer key;
    detail::ScratchBuffer value;
    detail::ManagerCore::dict_set(ref_, detail::encode_into(key.get(), k),
                                  detail::encode_into(value.get(), v));
  }
  bool contains(const K& k) const {
    detail::ScratchBuffer key;
    return detail::ManagerCore::dict_contains(ref_, detail::encode_into(key.get(), k));
  }
  /// Removes k; returns whether it was present.
  bool erase(const K& k) const {
    detail::ScratchBuffer key;
    return detail::ManagerCore::dict_erase(ref_, detail::encode_into(key.get(), k));
  }
  std::size_t size() const { return detail::ManagerCore::dict_size(ref_); }
  bool empty() const { return size() == 0; }
  /// Removes every key and frees their memory.
  void clear() const { detail::ManagerCore::dict_clear(ref_); }

  /// Atomic read-modify-write of one key: sets k to f(old), where old is the current value
  /// or nullopt, and returns the new value. f runs in the calling process with the arena
  /// locked (see the top of this file); if it throws, nothing changes.
  ///   counts.update(word, [](std::optional<long> n) { return n.value_or(0) + 1; });
  template <class F>
    requires std::is_invocable_v<F&, std::optional<V>&&>
  V update(const K& k, F&& f) const {
    detail::ScratchBuffer key;
    detail::ScratchBuffer out;
    std::optional<V> result;
    auto call = [&](const detail::ByteSpan* old) -> detail::ByteSpan {
      std::optional<V> previous;
      if (old != nullptr) previous.emplace(detail::decode_as<V>(*old));
      result.emplace(std::invoke(f, std::move(previous)));
      return detail::encode_into(out.get(), *result);
    };
    detail::ManagerCore::dict_update(ref_, detail::encode_into(key.get(), k),
                                     detail::ManagerCore::Updater(call));
    return std::move(*result);
  }

  /// For each (k, v) in `local` (any range of pairs, such as a std::map or
  /// std::unordered_map of counts): d[k] = contains(k) ? op(d[k], v) : v. Keys and values
  /// are converted to K and V. All pairs are applied under one acquisition of the lock,
  /// so other processes see none or all of them; a merge cut short by the merging
  /// process's death is applied in part, and one cut short by op throwing keeps the pairs
  /// before it. Blocks on the lock only; encodes `local` before taking it.
  template <std::ranges::input_range Map, class Op = std::plus<>>
  void merge(const Map& local, Op op = {}) const {
    using Ref = std::ranges::range_reference_t<const Map>;
    using Pair = std::remove_cvref_t<Ref>;
    // Values are reached again when their key turns out to be present: by address if the
    // range holds them as V, else from copies.
    constexpr bool by_address = std::is_lvalue_reference_v<Ref> &&
                                std::is_same_v<std::remove_cv_t<std::tuple_element_t<1, Pair>>, V>;
    detail::EncodedRun run;
    std::vector<const V*> addresses;
    std::vector<V> copies;
    if constexpr (std::ranges::sized_range<const Map>) {
      const auto n = static_cast<std::size_t>(std::ranges::size(local));
      run.ends.reserve(2 * n);
      if constexpr (by_address)
        addresses.reserve(n);
      else
        copies.reserve(n);
    }
    for (auto&& element : local) {
      auto&& [k, v] = element;
      const K& key = k;  // converts when the range's key type is not K
      detail::append_encoded(run, key);
      if constexpr (by_address) {
        addresses.push_back(std::addressof(v));
        detail::append_encoded(run, v);
      } else {
        copies.push_back(static_cast<V>(v));
        detail::append_encoded(run, copies.back());
      }
    }
    if (run.ends.empty()) return;
    detail::ScratchBuffer out;
    auto combine = [&](std::size_t i, detail::ByteSpan old) -> detail::ByteSpan {
      const V& incoming = [&]() -> const V& {
        if constexpr (by_address)
          return *addresses[i];
        else
          return copies[i];
      }();
      const V merged = std::invoke(op, detail::decode_as<V>(old), incoming);
      return detail::encode_into(out.get(), merged);
    };
    detail::ManagerCore::dict_merge(ref_, run, detail::ManagerCore::Combiner(combine));
  }

  /// A snapshot of every (key, value), in no particular order.
  std::vector<std::pair<K, V>> items() const {
    detail::EncodedRun run;
    detail::ManagerCore::dict_items(ref_, run, true);
    std::vector<std::pair<K, V>> out;
    out.reserve(run.ends.size() / 2);
    for (std::size_t i = 0; i + 1 < run.ends.size(); i += 2)
      out.emplace_back(detail::decode_as<K>(detail::run_entry(run, i)),
                       detail::decode_as<V>(detail::run_entry(run, i + 1)));
    return out;
  }
  /// A snapshot of every key, in no particular order.
  std::vector<K> keys() const {
    detail::EncodedRun run;
    detail::ManagerCore::dict_items(ref_, run, false);
    std::vector<K> out;
    out.reserve(run.ends.size());
    for (std::size_t i = 0; i < run.ends.size(); ++i)
      out.push_back(detail::decode_as<K>(detail::run_entry(run, i)));
    return out;
  }

  template <class Archive>
  void serialize(Archive& ar) {
    if constexpr (Archive::is_saving) {
      ref_.save(ar);
    } else {
      ref_.load_inside(ar, detail::kManagerObjectBytes, detail::kManagerObjectAlignment);
      detail::ManagerCore::check_dict(ref_, kTypeId);
    }
  }

 private:
  friend class Manager;
  static constexpr std::uint64_t kTypeId = detail::type_fingerprint<SharedDict>();
  explicit SharedDict(detail::SharedRef ref) noexcept : ref_(std::move(ref)) {}
  detail::SharedRef ref_;
};

/// Python's Manager().list(): a growable array of encoded values in a Manager's arena.
/// Make one with Manager::list<T>(). A default-constructed SharedList is an empty handle;
/// its operations throw std::logic_error.
template <class T>
class SharedList {
  static_assert(serializable<T>, "mproc::SharedList: elements must be serializable");
  static_assert(std::is_default_constructible_v<T>,
                "mproc::SharedList: elements must be default-constructible");

 public:
  using value_type = T;

  SharedList() = default;
  SharedList(const SharedList&) = default;
  SharedList& operator=(const SharedList&) = default;
  ~SharedList() = default;

  /// Adds v at the end. Throws std::length_error if the arena is full.
  void append(const T& v) const {
    detail::ScratchBuffer value;
    const std::uint64_t end = detail::encode_into(value.get(), v).size();
    detail::ManagerCore::list_extend(ref_, value.get(), std::span<const std::uint64_t>(&end, 1));
  }
  /// Adds every element of `range` at the end, all at once: other processes see none or
  /// all of them, and so does a death. Throws std::length_error if the arena is full
  /// (nothing is added then).
  template <std::ranges::input_range R>
  void extend(const R& range) const {
    detail::EncodedRun run;
    for (auto&& e : range) {
      const T& v = e;
      detail::append_encoded(run, v);
    }
    if (!run.ends.empty()) detail::ManagerCore::list_extend(ref_, run.bytes, run.ends);
  }
  /// The element at i. Throws std::out_of_range if i >= size() (Python's IndexError).
  T get(std::size_t i) const { return at(i); }
  /// The element at i. Throws std::out_of_range if i >= size().
  T at(std::size_t i) const {
    detail::ScratchBuffer value;
    if (!detail::ManagerCore::list_get(ref_, i, value.get())) detail::throw_index_error(i);
    return detail::decode_as<T>(value.get());
  }
  /// l[i] = v. Throws std::out_of_range if i >= size(), std::length_error if the arena
  /// is full.
  void set(std::size_t i, const T& v) const {
    detail::ScratchBuffer value;
    if (!detail::ManagerCore::list_set(ref_, i, detail::encode_into(value.get(), v)))
      detail::throw_index_error(i);
  }
  std::size_t size() const { return detail::ManagerCore::list_size(ref_); }
  bool empty() const { return size() == 0; }
  /// Removes every element and frees their memory.
  void clear() const { detail::ManagerCore::list_clear(ref_); }
  /// A snapshot of the elements.
  std::vector<T> to_vector() const {
    detail::EncodedRun run;
    detail::ManagerCore::list_items(ref_, run);
    std::vector<T> out;
    out.reserve(run.ends.size());
    for (std::size_t i = 0; i < run.ends.size(); ++i)
      out.push_back(detail::decode_as<T>(detail::run_entry(run, i)));
    return out;
  }

  template <class Archive>
  void serialize(Archive& ar) {
    if constexpr (Archive::is_saving) {
      ref_.save(ar);
    } else {
      ref_.load_inside(ar, detail::kManagerObjectBytes, detail::kManagerObjectAlignment);
      detail::ManagerCore::check_list(ref_, kTypeId);
    }
  }

 private:
  friend class Manager;
  static constexpr std::uint64_t kTypeId = detail::type_fingerprint<SharedList>();
  explicit SharedList(detail::SharedRef ref) noexcept : ref_(std::move(ref)) {}
  detail::SharedRef ref_;
};


namespace detail {

/// One attribute of a SharedNamespace: the readable name of the type it was set as, and
/// the value's encoding.
struct NamespaceSlot {
  std::string type;
  std::vector<std::byte> bytes;

  template <class Archive>
  void serialize(Archive& ar) {
    ar(type, bytes);
  }
};

}  // namespace detail

/// Python's Manager().Namespace(): named attributes of any serializable types, shared by
/// every process that holds the handle. Make one with Manager::namespace_().
///
///   auto ns = manager.namespace_();
///   ns.set("x", 1);                      // ns.x = 1
///   ns.set("label", std::string("run"));
///   mproc::Process p([ns] { ns.set("x", ns.get<int>("x") + 1); });
///   ns.get<int>("x");                    // ns.x; AttributeError if never set
///
/// A thin layer over a SharedDict from attribute names to encoded values, with its
/// guarantees (see the top of this file): each call is atomic and linearizable, and
/// a get() after another process's set() has returned sees it. An attribute remembers
/// the type it was last set as; reading it as another type throws std::invalid_argument
/// naming both (Python has no such check, since it has one kind of object). A
/// read-modify-write through get() then set() loses updates when processes interleave,
/// as `ns.x += 1` does in Python: hold an mproc::Lock around it, or use update(). A
/// default-constructed SharedNamespace is an empty handle; its operations throw
/// std::logic_error. Thread-safe. Process-safe.
class SharedNamespace {
 public:
  SharedNamespace() = default;
  SharedNamespace(const SharedNamespace&) = default;
  SharedNamespace& operator=(const SharedNamespace&) = default;
  ~SharedNamespace() = default;

  /// setattr(ns, name, value): sets or replaces the attribute, with value's type. Throws
  /// std::length_error if the arena is full (nothing changes then).
  template <class T>
  void set(std::string_view name, const T& value) const {
    static_assert(!std::is_array_v<T> && !std::is_pointer_v<T>,
                  "mproc::SharedNamespace: set a std::string, not a pointer or an array");
    static_assert(serializable<T> && std::is_default_constructible_v<T>,
                  "mproc::SharedNamespace: a value must be serializable and "
                  "default-constructible (see mproc/serialize.hpp)");
    attributes_.set(std::string(name), slot_of(value));
  }

  /// A string literal is set as a std::string: `ns.set("label", "run")`.
  void set(std::string_view name, const char* value) const { set(name, std::string(value)); }

  /// getattr(ns, name): the attribute's value. Throws mproc::AttributeError naming it
  /// if it is not set, std::invalid_argument if it was set as another type than T.
  template <class T>
  T get(std::string_view name) const {
    std::optional<detail::NamespaceSlot> slot = attributes_.get(std::string(name));
    if (!slot) detail::throw_attribute_error(name);
    return value_of<T>(name, *slot);
  }
  /// getattr(ns, name, fallback): the attribute's value, or `fallback` if it is not set.
  /// Throws std::invalid_argument if it was set as another type than T.
  template <class T>
  T get(std::string_view name, const T& fallback) const {
    std::optional<detail::NamespaceSlot> slot = attributes_.get(std::string(name));
    return slot ? value_of<T>(name, *slot) : fallback;
  }

  /// hasattr(ns, name).
  bool contains(std::string_view name) const { return attributes_.contains(std::string(name)); }
  /// delattr(ns, name): removes the attribute; returns whether it was set.
  bool erase(std::string_view name) const { return attributes_.erase(std::string(name)); }
  /// The names of the attributes set now, sorted (Python's sorted(vars(ns))).
  std::vector<std::string> names() const {
    std::vector<std::string> out = attributes_.keys();
    std::sort(out.begin(), out.end());
    return out;
  }

  /// Atomic read-modify-write of one attribute: sets it to f(old), where old is its value
  /// or nullopt if it is not set, and returns the new value. f runs with the arena locked
  /// (see SharedDict::update). Throws std::invalid_argument, changing nothing, if the
  /// attribute was set as another type than T; whatever f throws, changing nothing.
  ///   ns.update<long>("hits", [](std::optional<long> n) { return n.value_or(0) + 1; });
  template <class T, class F>
    requires std::is_invocable_r_v<T, F&, std::optional<T>&&>
  T update(std::string_view name, F&& f) const {
    std::optional<T> result;
    attributes_.update(std::string(name), [&](std::optional<detail::NamespaceSlot> old) {
      std::optional<T> previous;
      if (old) previous.emplace(value_of<T>(name, *old));
      result.emplace(std::invoke(f, std::move(previous)));
      return slot_of(*result);
    });
    return std::move(*result);
  }

  template <class Archive>
  void serialize(Archive& ar) {
    ar(attributes_);
  }

 private:
  friend class Manager;
  explicit SharedNamespace(SharedDict<std::string, detail::NamespaceSlot> attributes) noexcept
      : attributes_(std::move(attributes)) {}

  template <class T>
  static detail::NamespaceSlot slot_of(const T& value) {
    detail::NamespaceSlot slot{detail::type_name<T>(), {}};
    OutputArchive ar(slot.bytes);
    ar(value);
    return slot;
  }
  template <class T>
  static T value_of(std::string_view name, const detail::NamespaceSlot& slot) {
    const std::string wanted = detail::type_name<T>();
    if (slot.type != wanted) detail::throw_attribute_type(name, slot.type, wanted);
    return detail::decode_as<T>(slot.bytes);
  }

  SharedDict<std::string, detail::NamespaceSlot> attributes_;
};

template <class K, class V>
SharedDict<K, V> Manager::dict() const {
  return SharedDict<K, V>(detail::ManagerCore::new_dict(ref_, SharedDict<K, V>::kTypeId));
}

template <class T>
SharedList<T> Manager::list() const {
  return SharedList<T>(detail::ManagerCore::new_list(ref_, SharedList<T>::kTypeId));
}

inline SharedNamespace Manager::namespace_() const {
  return SharedNamespace(dict<std::string, detail::NamespaceSlot>());
}

}  // namespace mproc
