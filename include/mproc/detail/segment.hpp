// Shared segments: the memory behind every mproc shared object (Value, Array, the locks,
// Queue, Pipe, Manager), and how a handle to one travels to another process.
//
// A segment is an anonymous memfd (no /dev/shm name, mode 0600) mapped MAP_SHARED. A
// Segment is a counted reference to this process's mapping of it: when the last Segment
// referring to a mapping dies, the mapping is unmapped and the fd closed. The memory is
// freed by the kernel when the last process lets go of it, however the others ended.
//
// Reaching a segment from another process:
//   - a forked child inherits the mapping at the same address (Process, and pool workers
//     for segments created before the pool);
//   - otherwise the handle is serialized as a Wire {pid, fd, id, size} naming a process
//     that holds the segment open, and attach() opens /proc/<pid>/fd/<fd> (the kernel
//     lets only the same user do that), maps it and checks the random 64-bit id written
//     in the segment's first bytes, so a recycled fd number or pid is detected rather than
//     mapped. Every process that attached keeps its own fd, and names itself when it
//     sends the handle on, so a handle stays reachable as long as its sender lives.
// Within a process a segment is mapped once: a registry keyed by id hands out the
// existing mapping to every handle decoded later.
//
// Each Segment holds one fd. mproc raises this process's soft RLIMIT_NOFILE to the hard
// limit the first time it creates a segment (as the Go runtime does), so thousands of
// shared objects fit.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>

#include <sys/types.h>

#include "../export.hpp"

namespace mproc::detail {

class SegmentImpl;

/// Where a segment can be found by another process of the same user.
struct SegmentWire {
  std::int32_t pid = 0;      ///< a process that holds the segment open
  std::int32_t fd = -1;      ///< its fd there
  std::uint64_t id = 0;      ///< random id stored in the segment, checked on attach
  std::uint64_t size = 0;    ///< bytes of payload (data() .. data() + size())

  template <class Archive>
  void serialize(Archive& ar) {
    ar(pid, fd, id, size);
  }
};

class MPROC_API Segment {
 public:
  /// Alignment of data(): payloads may hold cache-line-aligned atomics.
  static constexpr std::size_t kAlignment = 64;

  Segment() noexcept = default;

  /// A new zero-filled segment with at least `size` payload bytes. `purpose` labels the
  /// memfd ("memfd:mproc:<purpose>" in /proc/<pid>/maps) and the errors. With `sparse`,
  /// the mapping reserves no swap (MAP_NORESERVE): pages exist only once touched, so a
  /// large arena costs address space, not memory.
  /// Throws std::invalid_argument for size 0, std::system_error when the system refuses.
  static Segment create(std::size_t size, std::string_view purpose, bool sparse = false);

  /// The segment `wire` describes, mapped in this process (the existing mapping if this
  /// process has it already). Its size() is wire.size: the size is compared with the
  /// registered mapping's, or with the file's before it is mapped. Throws
  /// SharedStateError if it cannot be reached or is not the segment the wire names
  /// (another id or size, not an mproc segment, a malformed pid or fd); never blocks.
  static Segment attach(const SegmentWire& wire);

  /// This process's description of the segment, for another process to attach().
  SegmentWire wire() const;

  std::byte* data() const noexcept { return data_; }
  std::size_t size() const noexcept { return size_; }
  std::uint64_t id() const noexcept;
  explicit operator bool() const noexcept { return data_ != nullptr; }
  /// True if `p` lies inside the payload.
  bool contains(const void* p) const noexcept {
    const auto* b = static_cast<const std::byte*>(p);
    return data_ != nullptr && b >= data_ && b < data_ + size_;
  }

  friend bool operator==(const Segment& a, const Segment& b) noexcept {
    return a.data_ == b.data_;
  }

 private:
  explicit Segment(std::shared_ptr<SegmentImpl> impl) noexcept;

  std::shared_ptr<SegmentImpl> impl_;
  std::byte* data_ = nullptr;
  std::size_t size_ = 0;
};

/// A shared object inside a segment: the segment (which keeps it mapped) and the
/// object's offset in its payload. What every shared handle holds and ships.
///
/// Loading a handle checks every field before anything reads the object: the segment
/// must be the one the wire names, of the size it names (Segment::attach), and the
/// object's `bytes` must lie inside it where such an object can be. Objects that own
/// their segment (locks, Value, Array, a Queue, a Manager) are at offset 0: load();
/// objects inside a shared segment (a Pipe's second direction, a Manager's dicts and
/// lists) are at a multiple of their alignment: load_inside(). What the object's own
/// header says (its kind tag, its layout) is then checked by the type that loads it.
struct SharedRef {
  Segment segment;
  std::uint64_t offset = 0;

  std::byte* get() const noexcept { return segment.data() + offset; }
  template <class T>
  T* as() const noexcept {
    return reinterpret_cast<T*>(get());
  }
  explicit operator bool() const noexcept { return static_cast<bool>(segment); }

  template <class Archive>
  void save(Archive& ar) const {
    SegmentWire w = segment.wire();
    ar(w, offset);
  }
  /// Loads a handle to an object of `bytes` that starts its segment. Throws
  /// SerializationError if the object would lie outside the segment or its offset is
  /// misaligned, SharedStateError if the offset is not 0 (no such object there), and
  /// what Segment::attach throws.
  template <class Archive>
  void load(Archive& ar, std::uint64_t bytes) {
    load_at(ar, bytes, 0);
  }
  /// Loads a handle to an object of `bytes` at a multiple of `alignment` (a power of
  /// two, at least 8) inside its segment. Throws as load().
  template <class Archive>
  void load_inside(Archive& ar, std::uint64_t bytes, std::uint64_t alignment) {
    load_at(ar, bytes, alignment);
  }

 private:
  template <class Archive>
  void load_at(Archive& ar, std::uint64_t bytes, std::uint64_t alignment) {
    SegmentWire w;
    std::uint64_t off = 0;
    ar(w, off);
    check_wire(w, off, bytes, alignment);
    segment = Segment::attach(w);  // of w.size bytes, so the check above holds for it
    offset = off;
  }
  // Refuses an offset that would put `bytes` of object outside a segment of w.size
  // bytes (SerializationError), that is misaligned: not a multiple of 8 or of
  // `alignment` (SerializationError), or that is not 0 when alignment is 0, for an
  // object that starts its segment (SharedStateError).
  MPROC_API static void check_wire(const SegmentWire& w, std::uint64_t offset, std::uint64_t bytes,
                                   std::uint64_t alignment);
};

/// The kind tags written at the start of each shared object's block, checked when a
/// handle is decoded so that bytes for a Lock are never taken for a Queue.
enum class SharedKind : std::uint32_t {
  lock = 0x4c4f434b,       // "LOCK"
  rlock = 0x524c434b,      // "RLCK"
  semaphore = 0x53454d41,  // "SEMA"
  event = 0x45564e54,      // "EVNT"
  condition = 0x434f4e44,  // "COND"
  barrier = 0x42415252,    // "BARR"
  value = 0x56414c55,      // "VALU"
  array = 0x41525241,      // "ARRA"
  channel = 0x4348414e,    // "CHAN"
  manager = 0x4d414e41,    // "MANA"
};

/// The public type a kind tag stands for, for error messages.
constexpr const char* kind_name(SharedKind kind) noexcept {
  switch (kind) {
    case SharedKind::lock: return "Lock";
    case SharedKind::rlock: return "RLock";
    case SharedKind::semaphore: return "Semaphore";
    case SharedKind::event: return "Event";
    case SharedKind::condition: return "Condition";
    case SharedKind::barrier: return "Barrier";
    case SharedKind::value: return "Value";
    case SharedKind::array: return "Array";
    case SharedKind::channel: return "Queue";
    case SharedKind::manager: return "Manager";
  }
  return "shared object";
}

/// Throws SharedStateError unless the 32-bit tag at `p` is `kind` ("<what>: the handle
/// does not name a <what>").
MPROC_API void check_kind(const void* p, SharedKind kind, const char* what);

}  // namespace mproc::detail
