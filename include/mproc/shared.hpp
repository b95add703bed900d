// Value<T> and Array<T>: Python's multiprocessing.Value and Array, in shared memory;
// Array2D<T>, a table of rows in shared memory (for Pool::map_rows).
//
//   mproc::Value<double> total(0.0);
//   mproc::Array<double> a(1'000'000, 1.0);
//   mproc::Process p([&] { total += std::reduce(a.begin(), a.end()); });  // atomic add
//
// A Value or Array is a handle to memory shared by every process that holds one: copies
// refer to the same memory, a forked Process inherits it, and it can be passed as an
// argument to Pool tasks and executors (it is serializable, and an Array travels as
// (segment, offset, length): its elements are never copied, whatever their number).
// slice() hands out a part of an Array the same way. The memory is an anonymous memfd
// (mode 0600, no /dev/shm name) and goes away with the last handle in the last process,
// also when processes holding handles are SIGKILLed.
//
// T must be trivially copyable (the bytes are the value in every process: no pointers,
// no std::string). Each object carries an RLock, get_lock(), as in Python.
//
// What another process sees. get() and set() are single relaxed atomic loads and stores
// when T is lock-free as std::atomic_ref<T> (all arithmetic types): never torn, but not
// ordered with anything else, and `v.set(v.get() + 1)` from several processes loses
// updates, exactly as Python's `v.value += 1` does. For an exact total, either hold
// get_lock() around the read-modify-write, or use the atomic operations (fetch_add, +=,
// compare_exchange), which are sequentially consistent read-modify-writes through
// std::atomic_ref and need no lock. For other T, get() and set() take the lock.
// Array elements are plain memory: operator[] and span() are for data written before it
// is handed to other processes, or written under a lock, or each element by one
// process; atomic(i) gives a std::atomic_ref to one element.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <iterator>
#include <limits>
#include <mutex>
#include <new>
#include <ranges>
#include <span>
#include <stdexcept>
#include <type_traits>
#include <vector>

#include "detail/segment.hpp"
#include "error.hpp"
#include "serialize.hpp"
#include "sync.hpp"

namespace mproc {

namespace detail {

// Layout of a Value or Array segment: the RLock block, this header, then the data.
struct SharedDataHeader {
  std::uint32_t kind;
  std::uint32_t element_size;
  std::uint64_t count;
};
inline constexpr std::size_t kSharedHeaderOffset = kLockBlockBytes;
inline constexpr std::size_t kSharedDataOffset = kLockBlockBytes + 64;

template <class T>
inline constexpr bool shared_atomic_v =
    std::is_trivially_copyable_v<T> && std::atomic_ref<T>::is_always_lock_free;

template <class T>
inline constexpr bool shared_arithmetic_v =
    std::is_arithmetic_v<T> && !std::is_same_v<T, bool> && shared_atomic_v<T>;

template <class T>
constexpr void check_shared_type() {
  static_assert(std::is_trivially_copyable_v<T>,
                "mproc::Value/Array: T must be trivially copyable (its bytes are shared by "
                "processes; no pointers, no std::string). Share text through a Queue or a "
                "Manager dict instead");
  static_assert(alignof(T) <= 64, "mproc::Value/Array: T may be aligned to at most 64 bytes");
}

// Creates a segment with an RLock, the header, and room for `count` Ts.
MPROC_API Segment make_shared_data(SharedKind kind, std::size_t element_size, std::size_t count,
                                   const char* purpose);
// Checks a decoded handle: the kind, the element size, and that [offset, offset + count
// elements) lies in the data. Throws SerializationError or SharedStateError.
MPROC_API void check_shared_data(const Segment& s, SharedKind kind, std::size_t element_size,
                                 std::uint64_t offset, std::uint64_t count, const char* what);

}  // namespace detail

/// One T in shared memory, with its lock (Python's multiprocessing.Value).
template <class T>
class Value {
 public:
  /// A new shared T, value-initialized (while a handle is being decoded: an empty handle
  /// for the decoder to fill). Throws std::system_error when shared memory cannot be
  /// created.
  Value() : lock_(detail::decoding() ? detail::SharedRef{} : make()) {
    if (lock_.ref_) new (ptr()) T{};
  }
  explicit Value(const T& initial) : lock_(make()) { new (ptr()) T(initial); }

  /// The value now. Does not block for lock-free T (a relaxed atomic load); otherwise
  /// takes get_lock(). Thread-safe. Process-safe.
  T get() const {
    if constexpr (detail::shared_atomic_v<T>) {
      return std::atomic_ref<T>(*ptr()).load(std::memory_order_relaxed);
    } else {
      std::lock_guard lk(lock_);
      T v;
      std::memcpy(static_cast<void*>(&v), ptr(), sizeof(T));
      return v;
    }
  }
  /// Stores v (a relaxed atomic store for lock-free T; otherwise under get_lock()).
  void set(const T& v) const {
    if constexpr (detail::shared_atomic_v<T>) {
      std::atomic_ref<T>(*ptr()).store(v, std::memory_order_relaxed);
    } else {
      std::lock_guard lk(lock_);
      std::memcpy(static_cast<void*>(ptr()), &v, sizeof(T));
    }
  }

  /// The RLock that comes with the value. Holding it makes read-modify-writes through
  /// get()/set() exact; the atomic operations below do not need it.
  RLock& get_lock() const noexcept { return lock_; }

  /// A std::atomic_ref to the value, for any atomic operation and memory order.
  std::atomic_ref<T> atomic() const noexcept
    requires detail::shared_atomic_v<T>
  {
    return std::atomic_ref<T>(*ptr());
  }
  /// Atomically adds d; returns the previous value. Lock-free. Thread-safe. Process-safe.
  T fetch_add(T d) const noexcept
    requires detail::shared_arithmetic_v<T>
  {
    return atomic().fetch_add(d);
  }
  T fetch_sub(T d) const noexcept
    requires detail::shared_arithmetic_v<T>
  {
    return atomic().fetch_sub(d);
  }
  /// Atomically adds d; returns the new value.
  T operator+=(T d) const noexcept
    requires detail::shared_arithmetic_v<T>
  {
    return fetch_add(d) + d;
  }
  T operator-=(T d) const noexcept
    requires detail::shared_arithmetic_v<T>
  {
    return fetch_sub(d) - d;
  }
  /// Atomically replaces the value with desired if it equals expected (else loads it
  /// into expected); returns whether it did.
  bool compare_exchange(T& expected, T desired) const noexcept
    requires detail::shared_atomic_v<T>
  {
    return atomic().compare_exchange_strong(expected, desired);
  }
  T exchange(T desired) const noexcept
    requires detail::shared_atomic_v<T>
  {
    return atomic().exchange(desired);
  }

  template <class Archive>
  void serialize(Archive& ar) {
    if constexpr (Archive::is_saving) {
      lock_.ref_.save(ar);
    } else {
      lock_.ref_.load(ar, detail::kSharedDataOffset + sizeof(T));
      detail::check_shared_data(lock_.ref_.segment, detail::SharedKind::value, sizeof(T),
                                detail::kSharedDataOffset, 1, "Value");
    }
  }

 private:
  static detail::SharedRef make() {
    detail::check_shared_type<T>();
    return detail::SharedRef{
        detail::make_shared_data(detail::SharedKind::value, sizeof(T), 1, "Value"), 0};
  }
  T* ptr() const noexcept {
    return reinterpret_cast<T*>(lock_.ref_.segment.data() + detail::kSharedDataOffset);
  }

  // The lock's reference keeps the segment mapped; it is the whole state.
  mutable RLock lock_;
};

/// A fixed-size array of T in shared memory, with its lock (Python's
/// multiprocessing.Array). A contiguous range: data(), span(), iterators, operator[].
template <class T>
class Array {
 public:
  using value_type = T;
  using iterator = T*;
  using const_iterator = const T*;

  /// An empty array that owns no memory (size() 0), to assign another Array to.
  Array() noexcept = default;
  /// n copies of `fill`. n may be 0. Throws std::system_error when shared memory cannot
  /// be created, std::length_error if n * sizeof(T) overflows.
  explicit Array(std::size_t n, const T& fill = T{}) : lock_(make(n)), count_(n) {
    std::uninitialized_fill_n(data(), n, fill);
  }
  Array(std::initializer_list<T> values) : Array(std::span<const T>(values.begin(), values.size())) {}
  /// A copy of `values` (any sized range of T, e.g. a std::vector).
  template <std::ranges::sized_range R>
    requires std::convertible_to<std::ranges::range_reference_t<R>, T> &&
             (!std::is_integral_v<std::remove_cvref_t<R>>)
  explicit Array(const R& values) : lock_(make(std::ranges::size(values))),
                                    count_(std::ranges::size(values)) {
    std::ranges::uninitialized_copy(values, std::span<T>(data(), count_));
  }

  std::size_t size() const noexcept { return count_; }
  bool empty() const noexcept { return count_ == 0; }
  T* data() const noexcept {
    return lock_.ref_ ? reinterpret_cast<T*>(lock_.ref_.segment.data() + offset_) : nullptr;
  }
  std::span<T> span() const noexcept { return {data(), count_}; }
  T* begin() const noexcept { return data(); }
  T* end() const noexcept { return data() + count_; }
  T& operator[](std::size_t i) const noexcept { return data()[i]; }
  /// operator[] with a bounds check (std::out_of_range).
  T& at(std::size_t i) const {
    if (i >= count_) throw std::out_of_range("mproc::Array::at: index out of range");
    return data()[i];
  }
  std::vector<T> to_vector() const { return {begin(), end()}; }

  /// Elements [first, first + count) as an Array sharing this one's memory and lock:
  /// what to pass to a task that works on part of the data. Throws std::out_of_range.
  Array slice(std::size_t first, std::size_t count) const {
    if (first > count_ || count > count_ - first)
      throw std::out_of_range("mproc::Array::slice: range out of bounds");
    Array a = *this;
    a.offset_ += first * sizeof(T);
    a.count_ = count;
    return a;
  }

  /// The RLock that comes with the array (shared by its slices).
  RLock& get_lock() const noexcept { return lock_; }

  /// A std::atomic_ref to element i (no bounds check).
  std::atomic_ref<T> atomic(std::size_t i) const noexcept
    requires detail::shared_atomic_v<T>
  {
    return std::atomic_ref<T>(data()[i]);
  }
  /// Atomically adds d to element i; returns its previous value.
  T fetch_add(std::size_t i, T d) const noexcept
    requires detail::shared_arithmetic_v<T>
  {
    return atomic(i).fetch_add(d);
  }

  template <class Archive>
  void serialize(Archive& ar) {
    if constexpr (Archive::is_saving) {
      lock_.ref_.save(ar);
      ar(offset_, count_);
    } else {
      std::uint64_t offset = 0, count = 0;
      lock_.ref_.load(ar, detail::kSharedDataOffset);
      ar(offset, count);
      detail::check_shared_data(lock_.ref_.segment, detail::SharedKind::array, sizeof(T), offset,
                                count, "Array");
      offset_ = offset;
      count_ = count;
    }
  }

 private:
  static detail::SharedRef make(std::size_t n) {
    detail::check_shared_type<T>();
    return detail::SharedRef{
        detail::make_shared_data(detail::SharedKind::array, sizeof(T), n, "Array"), 0};
  }

  mutable RLock lock_;
  std::uint64_t offset_ = detail::kSharedDataOffset;
  std::uint64_t count_ = 0;
};


/// A table of rows x cols T in shared memory, row after row (row-major), with its lock:
/// the rows of a DataFrame for Pool::map_rows. A handle, as Array: copies, forked
/// processes and tasks that receive it (as an argument or through mproc::bind) see the
/// same memory, and it travels as a few bytes whatever its size. row(i) is a std::span
/// over row i; writes to it are seen by every process holding the table (each row written
/// by one process at a time, or under get_lock()).
template <class T>
class Array2D {
 public:
  using value_type = T;

  /// An empty table (0 x 0), to assign another Array2D to.
  Array2D() noexcept = default;
  /// rows x cols copies of `fill`. Either may be 0. Throws std::length_error if
  /// rows * cols overflows, std::system_error when shared memory cannot be created.
  Array2D(std::size_t rows, std::size_t cols, const T& fill = T{})
      : data_(checked_size(rows, cols), fill), rows_(rows), cols_(cols) {}

  std::size_t rows() const noexcept { return rows_; }
  std::size_t cols() const noexcept { return cols_; }
  /// rows() * cols().
  std::size_t size() const noexcept { return data_.size(); }
  bool empty() const noexcept { return data_.empty(); }

  /// Row i as a span of cols() elements (no bounds check).
  std::span<T> row(std::size_t i) const noexcept { return {data_.data() + i * cols_, cols_}; }
  /// row(i) with a bounds check (std::out_of_range).
  std::span<T> at_row(std::size_t i) const {
    if (i >= rows_) throw std::out_of_range("mproc::Array2D::at_row: row out of range");
    return row(i);
  }
  /// Element (i, j) (no bounds check).
  T& operator()(std::size_t i, std::size_t j) const noexcept { return data_[i * cols_ + j]; }
  T* data() const noexcept { return data_.data(); }
  /// Every element, row after row.
  std::span<T> span() const noexcept { return data_.span(); }
  /// The elements as a flat Array sharing this table's memory and lock.
  const Array<T>& array() const noexcept { return data_; }

  /// The RLock that comes with the table.
  RLock& get_lock() const noexcept { return data_.get_lock(); }

  template <class Archive>
  void serialize(Archive& ar) {
    if constexpr (Archive::is_saving) {
      ar(data_, rows_, cols_);
    } else {
      std::uint64_t rows = 0, cols = 0;
      ar(data_, rows, cols);
      if (cols != 0 ? rows > data_.size() / cols || rows * cols != data_.size()
                    : data_.size() != 0)
        throw SerializationError("Array2D: the shape does not match the data");
      rows_ = rows;
      cols_ = cols;
    }
  }

 private:
  static std::size_t checked_size(std::size_t rows, std::size_t cols) {
    if (cols != 0 && rows > std::numeric_limits<std::size_t>::max() / cols)
      throw std::length_error("mproc::Array2D: rows * cols overflows");
    return rows * cols;
  }

  Array<T> data_;
  std::uint64_t rows_ = 0;
  std::uint64_t cols_ = 0;
};

}  // namespace mproc
