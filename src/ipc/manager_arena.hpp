// The Manager's arena: layout of the shared memory behind Manager, SharedDict and
// SharedList, its allocator, and the commit store. Internal to libmproc.
//
// Everything in the arena refers to everything else by offset from the segment's data(),
// never by pointer: each process maps the arena at its own address.
//
//   [ArenaHeader: kind, capacity, the lock, allocator state, list of objects]
//   [blocks ...                                              bump ->   (untouched, sparse)]
//
// A block is an 8-byte header (magic, size class) and its payload; the allocator hands out
// payload offsets (8 mod 16). Free blocks of each size class form a singly linked list
// through the first 8 payload bytes.
//
// Crash consistency rests on one rule: a mutation becomes visible through exactly one
// aligned 8-byte store, commit(), made after everything it publishes is written. A process
// killed before that store leaves the old state, after it the new; the worst outcome is a
// block that nothing refers to (a leak), never a reference to a block being reused.
#pragma once

#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>

#include "mproc/detail/lock_block.hpp"
#include "mproc/detail/segment.hpp"
#include "ipc/sync_block.hpp"
#include "mproc/manager.hpp"  // ManagerCrashPoint, which the tests arm through ManagerCore

namespace mproc::detail::arena {

inline constexpr std::uint32_t kVersion = 1;
inline constexpr std::uint32_t kDictKind = 0x4d444354;  // "MDCT"
inline constexpr std::uint32_t kListKind = 0x4d4c5354;  // "MLST"

// ---- size classes -----------------------------------------------------------------------
// 16, 32, ..., 128 bytes, then four classes per power of two (160, 192, 224, 256, 320, ...),
// so a block wastes at most a quarter of its size, up to the 2^47 bytes a segment can have.

inline constexpr unsigned kLinearClasses = 8;
inline constexpr unsigned kClasses = kLinearClasses + 4 * (47 - 7);

constexpr std::uint64_t class_size(unsigned c) noexcept {
  if (c < kLinearClasses) return (std::uint64_t{c} + 1) * 16;
  const unsigned k = c - kLinearClasses;
  const unsigned e = 7 + k / 4;
  return (std::uint64_t{1} << e) + (std::uint64_t{k % 4} + 1) * (std::uint64_t{1} << (e - 2));
}

/// The smallest class of at least n bytes (n >= 1); kClasses or more if none.
constexpr unsigned class_of(std::uint64_t n) noexcept {
  if (n <= 128) return n == 0 ? 0 : static_cast<unsigned>((n + 15) / 16 - 1);
  const unsigned e = static_cast<unsigned>(std::bit_width(n - 1)) - 1;  // 2^e < n <= 2^(e+1)
  const std::uint64_t step = std::uint64_t{1} << (e - 2);
  const std::uint64_t q = (n - (std::uint64_t{1} << e) + step - 1) / step;  // 1..4
  return kLinearClasses + (e - 7) * 4 + static_cast<unsigned>(q) - 1;
}

static_assert(class_size(class_of(129)) == 160 && class_size(class_of(256)) == 256 &&
              class_size(class_of(257)) == 320 &&
              class_size(kClasses - 1) == (std::uint64_t{1} << 47));

// ---- layout -------------------------------------------------------------------------------

struct ArenaHeader {
  std::uint32_t kind;  // SharedKind::manager
  std::uint32_t version;
  std::uint64_t capacity;    // bytes of payload in the segment
  std::uint64_t heap_start;  // offset of the first block
  std::uint64_t hash_seed;   // random per arena, so colliding keys cannot be precomputed
  alignas(64) std::byte lock[kLockBlockBytes];
  // Allocator and object list; written only with the lock held.
  std::uint64_t bump;     // offset of the first never-used byte
  std::uint64_t used;     // bytes of blocks handed out (recounted after a death)
  std::uint64_t objects;  // first ObjectHeader, linked through `next`
  std::uint64_t free_heads[kClasses];
};
static_assert(sizeof(ArenaHeader) <= 2048);

inline constexpr std::uint64_t kBlockHeader = 8;
inline constexpr std::uint64_t kBlockMagic = 0x4d424c4bULL << 32;  // "MBLK", class below

/// What every dict and list starts with.
struct ObjectHeader {
  std::uint32_t kind;
  std::uint32_t reserved;
  std::uint64_t next;  // next object of the arena (never removed)
  std::uint64_t type_id;
};

struct DictHeader {
  ObjectHeader object;
  std::uint64_t table;  // Table payload offset; 0 while empty
};

struct ListHeader {
  ObjectHeader object;
  std::uint64_t items;  // ItemArray payload offset; 0 while empty
  std::uint64_t size;   // elements; the commit word of append and extend
};
static_assert(sizeof(DictHeader) <= 40 && sizeof(ListHeader) <= 40);

/// Open addressing with linear probing. A slot is 0 (empty), kTombstone (erased), or an
/// Entry's offset (< 2^47) with the top 16 bits of its key's hash above bit 48, so most
/// mismatches are rejected without touching the entry.
struct Table {
  std::uint64_t capacity;  // slots, a power of two
  std::uint64_t live;      // entries (recounted after a death)
  std::uint64_t tombs;     // tombstones (recounted after a death)
  std::uint64_t reserved;
  std::uint64_t* slots() noexcept { return reinterpret_cast<std::uint64_t*>(this + 1); }
};

inline constexpr std::uint64_t kEmpty = 0;
inline constexpr std::uint64_t kTombstone = 1;
inline constexpr std::uint64_t kOffsetMask = (std::uint64_t{1} << 48) - 1;

/// A key and its value. The value is in slot[state & 1]: its bytes when it encodes to at
/// most 8, else the offset of a block holding them. Replacing a value writes the other
/// slot, then `state` (one store), so a reader sees the old value or the new one.
struct Entry {
  std::uint64_t hash;
  std::uint64_t state;  // (value length << 1) | slot in use
  std::uint64_t slot[2];
  std::uint64_t key_len;
  std::byte* key() noexcept { return reinterpret_cast<std::byte*>(this + 1); }
};

inline constexpr std::uint64_t kInlineValue = 8;

/// A list's element offsets. A slot is an element of up to 7 bytes inline (bit 0 set,
/// length in bits 1-3, bytes in the upper 7 bytes) or the offset of a block holding a
/// u64 length and the bytes.
struct ItemArray {
  std::uint64_t capacity;
  std::uint64_t reserved;
  std::uint64_t* slots() noexcept { return reinterpret_cast<std::uint64_t*>(this + 1); }
};

inline constexpr std::uint64_t kInlineItem = 7;

/// The one store that makes a mutation visible. The signal fences are compiler barriers:
/// they keep the compiler from sinking the writes being published below the store, or
/// hoisting the clean-up after it (freeing the block it replaced) above it, which a death
/// in between would turn into a reference to a free block. No hardware fence is needed
/// for other processes: they read only under the lock, whose acquisition orders them
/// after everything the holder did (a dead holder's stores included: the kernel releases
/// its robust futex on its exit path).
inline void commit(std::uint64_t& word, std::uint64_t value) noexcept {
  std::atomic_signal_fence(std::memory_order_seq_cst);
  std::atomic_ref<std::uint64_t>(word).store(value, std::memory_order_release);
  std::atomic_signal_fence(std::memory_order_seq_cst);
}

/// The crash point armed by ManagerCore::crash_at_for_testing (none in programs: then a
/// crash point costs one load of a process-local int).
extern int g_crash_point;
[[gnu::cold]] void crash_point_reached() noexcept;
inline void crash_point(ManagerCrashPoint p) noexcept {
  if (g_crash_point == static_cast<int>(p)) [[unlikely]]
    crash_point_reached();
}

/// A process's view of an arena, for the duration of one operation.
class Arena {
 public:
  explicit Arena(std::byte* base) noexcept
      : base_(base), h_(reinterpret_cast<ArenaHeader*>(base)) {}

  template <class T>
  T* at(std::uint64_t offset) const noexcept {
    return reinterpret_cast<T*>(base_ + offset);
  }
  std::byte* bytes(std::uint64_t offset) const noexcept { return base_ + offset; }
  ArenaHeader* header() const noexcept { return h_; }
  LockBlock* lock_block() const noexcept { return reinterpret_cast<LockBlock*>(h_->lock); }

  /// A block of at least `payload` bytes; returns its payload offset. `fresh` tells
  /// whether the bytes are zero (never used). Throws std::length_error if the arena is full.
  std::uint64_t alloc(std::uint64_t payload, bool* fresh = nullptr);
  /// Returns the block at payload offset `offset` to its free list. The caller has
  /// already made it unreachable (committed).
  void free(std::uint64_t offset) noexcept;
  /// Recounts what a holder that died may have left stale: dict sizes and tombstone
  /// counts, and the bytes in use. Idempotent, so a death during it is harmless too.
  void repair() noexcept;

 private:
  [[noreturn]] void throw_full(std::uint64_t payload) const;
  void release_pages(std::uint64_t begin, std::uint64_t end) const noexcept;

  std::byte* base_;
  ArenaHeader* h_;
};

}  // namespace mproc::detail::arena
