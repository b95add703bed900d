// The Manager's arena core: allocator, hash tables and lists over encoded bytes, in shared
// memory under one robust lock. The layout and the commit rule are in manager_arena.hpp.
//
// The lock is taken with pthread_mutex_lock directly rather than through robust_lock():
// the arena does not need the Lock's owner bookkeeping, and leaving it out keeps an
// uncontended operation free of system calls.
#include "mproc/manager.hpp"

#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cerrno>
#include <cstring>
#include <new>
#include <stdexcept>
#include <string>

#include <fmt/format.h>

#include "mproc/error.hpp"
#include "mproc/sync.hpp"
#include "ipc/manager_arena.hpp"
#include "os/platform.hpp"

namespace mproc::detail {

namespace arena {

// ---- fault injection ----------------------------------------------------------------------

int g_crash_point = 0;

namespace {
int g_crash_countdown = 0;
}  // namespace

void crash_point_reached() noexcept {
  if (--g_crash_countdown <= 0) ::kill(::getpid(), SIGKILL);
}

// ---- allocator ------------------------------------------------------------------------------

namespace {
// Freed blocks this large give their pages back (MADV_REMOVE punches them out of the memfd).
constexpr std::uint64_t kReleaseBytes = std::uint64_t{1} << 20;
}  // namespace

void Arena::throw_full(std::uint64_t payload) const {
  throw std::length_error(fmt::format(
      "mproc::Manager: the arena is full ({} of {} bytes in use; {} more requested); create "
      "the Manager with a larger ManagerOptions::capacity",
      h_->used, h_->capacity, payload));
}

std::uint64_t Arena::alloc(std::uint64_t payload, bool* fresh) {
  if (payload > h_->capacity) throw_full(payload);
  const unsigned c = class_of(payload + kBlockHeader);
  if (c >= kClasses) throw_full(payload);
  const std::uint64_t size = class_size(c);
  std::uint64_t block = h_->free_heads[c];
  if (block != 0) {
    commit(h_->free_heads[c], *at<std::uint64_t>(block + kBlockHeader));
    if (fresh != nullptr) *fresh = false;
  } else {
    block = h_->bump;
    if (size > h_->capacity - block) throw_full(payload);
    // Bytes past `bump` belong to no one, so the header may be written before the commit.
    *at<std::uint64_t>(block) = kBlockMagic | c;
    commit(h_->bump, block + size);
    if (fresh != nullptr) *fresh = true;
  }
  crash_point(ManagerCrashPoint::block_taken);
  h_->used += size;
  return block + kBlockHeader;
}

void Arena::free(std::uint64_t offset) noexcept {
  const std::uint64_t block = offset - kBlockHeader;
  const std::uint64_t tag = *at<std::uint64_t>(block);
  const auto c = static_cast<unsigned>(tag & 0xffffffffU);
  // Not a block header: leak it rather than thread a stray offset into a free list.
  if ((tag & ~std::uint64_t{0xffffffffU}) != kBlockMagic || c >= kClasses) return;
  const std::uint64_t size = class_size(c);
  if (size >= kReleaseBytes) release_pages(offset + 8, block + size);
  *at<std::uint64_t>(offset) = h_->free_heads[c];
  commit(h_->free_heads[c], block);
  crash_point(ManagerCrashPoint::block_freed);
  h_->used -= size;
}

void Arena::release_pages(std::uint64_t begin, std::uint64_t end) const noexcept {
  static const auto page = static_cast<std::uintptr_t>(::sysconf(_SC_PAGESIZE));
  const auto first = (reinterpret_cast<std::uintptr_t>(bytes(begin)) + page - 1) / page * page;
  const auto last = reinterpret_cast<std::uintptr_t>(bytes(end)) / page * page;
  // Best effort: the pages read back as zeros whether or not the kernel freed them.
  if (last > first) ::madvise(reinterpret_cast<void*>(first), last - first, MADV_REMOVE);
}

void Arena::repair() noexcept {
  for (std::uint64_t o = h_->objects; o != 0; o = at<ObjectHeader>(o)->next) {
    if (at<ObjectHeader>(o)->kind != kDictKind) continue;  // a list's size is its commit word
    const std::uint64_t t_off = at<DictHeader>(o)->table;
    if (t_off == 0) continue;
    auto* t = at<Table>(t_off);
    std::uint64_t live = 0;
    std::uint64_t tombs = 0;
    for (std::uint64_t i = 0; i < t->capacity; ++i) {
      const std::uint64_t s = t->slots()[i];
      if (s == kTombstone)
        ++tombs;
      else if (s != kEmpty)
        ++live;
    }
    t->live = live;
    t->tombs = tombs;
  }
  std::uint64_t free_bytes = 0;
  for (unsigned c = 0; c < kClasses; ++c) {
    for (std::uint64_t b = h_->free_heads[c]; b != 0; b = *at<std::uint64_t>(b + kBlockHeader))
      free_bytes += class_size(c);
  }
  h_->used = h_->bump - h_->heap_start - free_bytes;
}

}  // namespace arena

namespace {

using namespace arena;

// ---- hashing: wyhash (Wang Yi, public domain), final version 4 --------------------------

__extension__ typedef unsigned __int128 u128;

inline std::uint64_t mum_mix(std::uint64_t a, std::uint64_t b) noexcept {
  const u128 r = static_cast<u128>(a) * b;
  return static_cast<std::uint64_t>(r) ^ static_cast<std::uint64_t>(r >> 64);
}
inline std::uint64_t read8(const std::byte* p) noexcept {
  std::uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}
inline std::uint64_t read4(const std::byte* p) noexcept {
  std::uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

std::uint64_t hash_bytes(ByteSpan key, std::uint64_t seed) noexcept {
  constexpr std::uint64_t s0 = 0xa0761d6478bd642fULL, s1 = 0xe7037ed1a0b428dbULL,
                          s2 = 0x8ebc6af09c88c6e3ULL, s3 = 0x589965cc75374cc3ULL;
  const std::byte* p = key.data();
  const std::size_t len = key.size();
  seed ^= mum_mix(seed ^ s0, s1);
  std::uint64_t a = 0;
  std::uint64_t b = 0;
  if (len <= 16) {
    if (len >= 4) {
      const std::size_t mid = (len >> 3) << 2;
      a = (read4(p) << 32) | read4(p + mid);
      b = (read4(p + len - 4) << 32) | read4(p + len - 4 - mid);
    } else if (len > 0) {
      a = (std::to_integer<std::uint64_t>(p[0]) << 16) |
          (std::to_integer<std::uint64_t>(p[len >> 1]) << 8) |
          std::to_integer<std::uint64_t>(p[len - 1]);
    }
  } else {
    std::size_t i = len;
    if (i > 48) {
      std::uint64_t see1 = seed;
      std::uint64_t see2 = seed;
      do {
        seed = mum_mix(read8(p) ^ s1, read8(p + 8) ^ seed);
        see1 = mum_mix(read8(p + 16) ^ s2, read8(p + 24) ^ see1);
        see2 = mum_mix(read8(p + 32) ^ s3, read8(p + 40) ^ see2);
        p += 48;
        i -= 48;
      } while (i > 48);
      seed ^= see1 ^ see2;
    }
    while (i > 16) {
      seed = mum_mix(read8(p) ^ s1, read8(p + 8) ^ seed);
      i -= 16;
      p += 16;
    }
    a = read8(p + i - 16);
    b = read8(p + i - 8);
  }
  const u128 r = static_cast<u128>(a ^ s1) * (b ^ seed);
  return mum_mix(static_cast<std::uint64_t>(r) ^ s0 ^ len,
                 static_cast<std::uint64_t>(r >> 64) ^ s1);
}

// ---- locking ------------------------------------------------------------------------------

/// An operation's view of the arena, with the lock held for its lifetime.
class Locked : public Arena {
 public:
  explicit Locked(const SharedRef& ref, const char* what) : Arena(base_of(ref, what)) {
    pthread_mutex_t* m = &lock_block()->mutex;
    const int rc = ::pthread_mutex_lock(m);
    if (rc == EOWNERDEAD) {
      // The holder died inside an operation. Its mutation either committed or not; only
      // the counters beside it may be stale.
      ::pthread_mutex_consistent(m);
      repair();
    } else if (rc == EDEADLK) {
      throw std::logic_error(fmt::format(
          "{}: used from inside an update() or merge() callback of the same Manager (its "
          "lock is held there)",
          what));
    } else if (rc != 0) {
      throw_system_error(rc, fmt::format("pthread_mutex_lock for {}", what));
    }
  }
  ~Locked() { ::pthread_mutex_unlock(&lock_block()->mutex); }
  Locked(const Locked&) = delete;
  Locked& operator=(const Locked&) = delete;

 private:
  static std::byte* base_of(const SharedRef& ref, const char* what) {
    if (!ref.segment) [[unlikely]]
      throw std::logic_error(fmt::format("{}: empty handle (default-constructed)", what));
    return ref.segment.data();
  }
};

/// The hash of `key` in the arena of `ref`, computed before taking the lock.
std::uint64_t key_hash(const SharedRef& ref, ByteSpan key, const char* what) {
  if (!ref.segment) [[unlikely]]
    throw std::logic_error(fmt::format("{}: empty handle (default-constructed)", what));
  return hash_bytes(key, reinterpret_cast<const ArenaHeader*>(ref.segment.data())->hash_seed);
}

// ---- values -------------------------------------------------------------------------------

ByteSpan entry_value(const Arena& a, Entry* e) noexcept {
  const std::uint64_t len = e->state >> 1;
  const std::uint64_t& slot = e->slot[e->state & 1];
  if (len <= kInlineValue)
    return {reinterpret_cast<const std::byte*>(&slot), static_cast<std::size_t>(len)};
  return {a.bytes(slot), static_cast<std::size_t>(len)};
}

// The slot word for `value`: its bytes, or a new block holding them.
std::uint64_t store_value(Arena& a, ByteSpan value) {
  if (value.size() <= kInlineValue) {
    std::uint64_t w = 0;
    if (!value.empty()) std::memcpy(&w, value.data(), value.size());
    return w;
  }
  const std::uint64_t blob = a.alloc(value.size());
  std::memcpy(a.bytes(blob), value.data(), value.size());
  return blob;
}

void replace_value(Arena& a, Entry* e, ByteSpan value) {
  const std::uint64_t old_state = e->state;
  const std::uint64_t next = (old_state & 1) ^ 1;
  e->slot[next] = store_value(a, value);
  crash_point(ManagerCrashPoint::value_written);
  commit(e->state, (std::uint64_t{value.size()} << 1) | next);
  crash_point(ManagerCrashPoint::value_switched);
  if ((old_state >> 1) > kInlineValue) a.free(e->slot[old_state & 1]);
}

void free_entry(Arena& a, std::uint64_t entry) noexcept {
  auto* e = a.at<Entry>(entry);
  if ((e->state >> 1) > kInlineValue) a.free(e->slot[e->state & 1]);
  a.free(entry);
}

// ---- dict -----------------------------------------------------------------------------------

constexpr std::uint64_t kMinTable = 16;

struct Probe {
  std::uint64_t* slot = nullptr;  // the key's slot, or where it would go
  Entry* entry = nullptr;         // null if absent
  bool tombstone = false;         // `slot` is a tombstone to reuse
};

inline std::uint64_t tag_of(std::uint64_t hash) noexcept { return hash & ~kOffsetMask; }

Probe find(const Arena& a, Table* t, std::uint64_t hash, ByteSpan key) noexcept {
  Probe p;
  if (t == nullptr) return p;
  const std::uint64_t mask = t->capacity - 1;
  const std::uint64_t tag = tag_of(hash);
  std::uint64_t* slots = t->slots();
  // Occupancy stays below 3/4, so an empty slot ends every probe.
  for (std::uint64_t i = hash & mask;; i = (i + 1) & mask) {
    const std::uint64_t s = slots[i];
    if (s == kEmpty) {
      if (p.slot == nullptr) p.slot = &slots[i];
      return p;
    }
    if (s == kTombstone) {
      if (p.slot == nullptr) {
        p.slot = &slots[i];
        p.tombstone = true;
      }
    } else if ((s & ~kOffsetMask) == tag) {
      auto* e = a.at<Entry>(s & kOffsetMask);
      if (e->hash == hash && e->key_len == key.size() &&
          std::memcmp(e->key(), key.data(), key.size()) == 0) {
        p.slot = &slots[i];
        p.entry = e;
        p.tombstone = false;
        return p;
      }
    }
  }
}

Table* table_of(const Arena& a, DictHeader* d) noexcept {
  return d->table == 0 ? nullptr : a.at<Table>(d->table);
}

// Replaces the dict's table by one sized for `need` entries at most half full, without
// tombstones. The new table is complete before one store installs it; until then the
// old one, untouched, is the dict.
Table* rebuild(Arena& a, DictHeader* d, std::uint64_t need) {
  const std::uint64_t cap = std::max(kMinTable, std::bit_ceil(need * 2));
  bool fresh = false;
  const std::uint64_t off = a.alloc(sizeof(Table) + cap * 8, &fresh);
  auto* t = a.at<Table>(off);
  if (!fresh) std::memset(t->slots(), 0, cap * 8);
  t->capacity = cap;
  t->tombs = 0;
  t->reserved = 0;
  std::uint64_t live = 0;
  const std::uint64_t old_off = d->table;
  if (old_off != 0) {
    Table* old = a.at<Table>(old_off);
    const std::uint64_t mask = cap - 1;
    for (std::uint64_t i = 0; i < old->capacity; ++i) {
      const std::uint64_t s = old->slots()[i];
      if (s == kEmpty || s == kTombstone) continue;
      std::uint64_t j = a.at<Entry>(s & kOffsetMask)->hash & mask;
      while (t->slots()[j] != kEmpty) j = (j + 1) & mask;
      t->slots()[j] = s;
      ++live;
    }
  }
  t->live = live;
  commit(d->table, off);
  crash_point(ManagerCrashPoint::table_installed);
  if (old_off != 0) a.free(old_off);
  return t;
}

void insert(Arena& a, DictHeader* d, Probe p, std::uint64_t hash, ByteSpan key, ByteSpan value) {
  Table* t = table_of(a, d);
  if (!p.tombstone && (t == nullptr || (t->live + t->tombs + 1) * 4 > t->capacity * 3)) {
    t = rebuild(a, d, (t == nullptr ? 0 : t->live) + 1);
    p = find(a, t, hash, key);
  }
  // Write the whole entry, then link it: a death before the link leaks the entry.
  const std::uint64_t word = store_value(a, value);
  std::uint64_t off = 0;
  try {
    off = a.alloc(sizeof(Entry) + key.size());
  } catch (...) {
    if (value.size() > kInlineValue) a.free(word);
    throw;
  }
  auto* e = a.at<Entry>(off);
  e->hash = hash;
  e->state = std::uint64_t{value.size()} << 1;
  e->slot[0] = word;
  e->slot[1] = 0;
  e->key_len = key.size();
  std::memcpy(e->key(), key.data(), key.size());
  crash_point(ManagerCrashPoint::insert_written);
  commit(*p.slot, tag_of(hash) | off);
  crash_point(ManagerCrashPoint::insert_linked);
  ++t->live;
  if (p.tombstone) --t->tombs;
}

}  // namespace

// ---- ManagerCore -----------------------------------------------------------------------------

namespace {

constexpr std::uint64_t kMinCapacity = std::uint64_t{64} << 10;

const char* kind_name(std::uint32_t kind) {
  return kind == kDictKind ? "SharedDict" : "SharedList";
}

void check_arena(const Segment& segment, const char* what) {
  if (!segment) throw std::logic_error(fmt::format("{}: empty handle", what));
  if (segment.size() < kManagerHeaderBytes)
    throw SharedStateError(fmt::format("{}: the handle does not name a Manager", what));
  check_kind(segment.data(), SharedKind::manager, what);
  const auto* h = reinterpret_cast<const ArenaHeader*>(segment.data());
  if (h->version != kVersion)
    throw SharedStateError(
        fmt::format("{}: the Manager was made by another version of mproc", what));
  if (h->capacity != segment.size() || h->heap_start < sizeof(ArenaHeader) ||
      h->heap_start % 64 != 0 || h->heap_start > h->capacity)
    throw SharedStateError(fmt::format("{}: the handle names a damaged Manager", what));
}

SharedRef new_object(const SharedRef& arena_ref, std::uint32_t kind, std::uint64_t type_id) {
  Locked a(arena_ref, "mproc::Manager");
  bool fresh = false;
  const std::uint64_t off = a.alloc(kManagerObjectBytes, &fresh);
  std::memset(a.bytes(off), 0, kManagerObjectBytes);
  auto* o = a.at<ObjectHeader>(off);
  o->kind = kind;
  o->type_id = type_id;
  o->next = a.header()->objects;
  commit(a.header()->objects, off);
  return SharedRef{arena_ref.segment, off};
}

void check_object(const SharedRef& ref, std::uint32_t kind, std::uint64_t type_id) {
  const char* what = kind_name(kind);
  check_arena(ref.segment, what);
  auto* h = reinterpret_cast<ArenaHeader*>(ref.segment.data());
  // An object is the payload of a block the allocator handed out (below bump, which
  // only grows; its stores are commits, so an acquire load sees the block's header),
  // of the size class new_object() asks for, and begins with the kind tag. The offset
  // is inside the segment already (SharedRef::load_inside).
  const std::uint64_t bump =
      std::atomic_ref<std::uint64_t>(h->bump).load(std::memory_order_acquire);
  const std::uint64_t block = ref.offset - kBlockHeader;
  const bool placed = ref.offset >= h->heap_start + kBlockHeader &&
                      (ref.offset - h->heap_start) % 16 == kBlockHeader &&
                      bump <= ref.segment.size() && ref.offset + kManagerObjectBytes <= bump;
  if (!placed || *reinterpret_cast<const std::uint64_t*>(ref.segment.data() + block) !=
                     (kBlockMagic | class_of(kManagerObjectBytes + kBlockHeader)))
    throw SharedStateError(fmt::format("{}: the handle does not name a {}", what, what));
  const auto* o = reinterpret_cast<const ObjectHeader*>(ref.get());
  if (o->kind != kind)
    throw SharedStateError(fmt::format("{}: the handle does not name a {}", what, what));
  if (o->type_id != type_id)
    throw SharedStateError(fmt::format(
        "{}: the handle names a {} of other element types than the one decoding it", what, what));
}

DictHeader* dict_header(const Arena& a, const SharedRef& ref) noexcept {
  return a.at<DictHeader>(ref.offset);
}
ListHeader* list_header(const Arena& a, const SharedRef& ref) noexcept {
  return a.at<ListHeader>(ref.offset);
}

constexpr const char* kDict = "mproc::SharedDict";
constexpr const char* kList = "mproc::SharedList";

}  // namespace

SharedRef ManagerCore::create(std::size_t capacity) {
  const std::uint64_t size = std::max<std::uint64_t>(capacity, kMinCapacity);
  SharedRef ref;
  ref.segment = Segment::create(size, "Manager", /*sparse=*/true);
  ref.offset = 0;
  auto* h = new (ref.segment.data()) ArenaHeader{};
  h->kind = static_cast<std::uint32_t>(SharedKind::manager);
  h->version = kVersion;
  h->capacity = ref.segment.size();
  h->heap_start = (sizeof(ArenaHeader) + 63) / 64 * 64;
  h->hash_seed = ref.segment.id();
  h->bump = h->heap_start;
  init_lock_block(h->lock, false);
  return ref;
}

void ManagerCore::check_manager(const SharedRef& arena_ref) {
  check_arena(arena_ref.segment, "mproc::Manager");
  if (arena_ref.offset != 0)
    throw SharedStateError("mproc::Manager: the handle does not name a Manager");
}

std::size_t ManagerCore::bytes_used(const SharedRef& arena_ref) {
  Locked a(arena_ref, "mproc::Manager");
  return a.header()->used;
}

SharedRef ManagerCore::new_dict(const SharedRef& arena_ref, std::uint64_t type_id) {
  return new_object(arena_ref, kDictKind, type_id);
}
SharedRef ManagerCore::new_list(const SharedRef& arena_ref, std::uint64_t type_id) {
  return new_object(arena_ref, kListKind, type_id);
}
void ManagerCore::check_dict(const SharedRef& dict, std::uint64_t type_id) {
  check_object(dict, kDictKind, type_id);
}
void ManagerCore::check_list(const SharedRef& list, std::uint64_t type_id) {
  check_object(list, kListKind, type_id);
}

bool ManagerCore::dict_get(const SharedRef& dict, ByteSpan key, std::vector<std::byte>& value) {
  const std::uint64_t hash = key_hash(dict, key, kDict);
  Locked a(dict, kDict);
  const Probe p = find(a, table_of(a, dict_header(a, dict)), hash, key);
  if (p.entry == nullptr) return false;
  const ByteSpan v = entry_value(a, p.entry);
  value.assign(v.begin(), v.end());
  return true;
}

void ManagerCore::dict_set(const SharedRef& dict, ByteSpan key, ByteSpan value) {
  const std::uint64_t hash = key_hash(dict, key, kDict);
  Locked a(dict, kDict);
  DictHeader* d = dict_header(a, dict);
  const Probe p = find(a, table_of(a, d), hash, key);
  if (p.entry != nullptr)
    replace_value(a, p.entry, value);
  else
    insert(a, d, p, hash, key, value);
}

bool ManagerCore::dict_contains(const SharedRef& dict, ByteSpan key) {
  const std::uint64_t hash = key_hash(dict, key, kDict);
  Locked a(dict, kDict);
  return find(a, table_of(a, dict_header(a, dict)), hash, key).entry != nullptr;
}

bool ManagerCore::dict_erase(const SharedRef& dict, ByteSpan key) {
  const std::uint64_t hash = key_hash(dict, key, kDict);
  Locked a(dict, kDict);
  Table* t = table_of(a, dict_header(a, dict));
  const Probe p = find(a, t, hash, key);
  if (p.entry == nullptr) return false;
  const std::uint64_t entry = *p.slot & kOffsetMask;
  // Linear probing: a probe that reached this slot would stop at the next one if it is
  // empty, so the slot can become empty too instead of a tombstone.
  const std::uint64_t i = static_cast<std::uint64_t>(p.slot - t->slots());
  const bool next_empty = t->slots()[(i + 1) & (t->capacity - 1)] == kEmpty;
  commit(*p.slot, next_empty ? kEmpty : kTombstone);
  crash_point(ManagerCrashPoint::erased);
  --t->live;
  if (!next_empty) ++t->tombs;
  free_entry(a, entry);
  return true;
}

std::size_t ManagerCore::dict_size(const SharedRef& dict) {
  Locked a(dict, kDict);
  const Table* t = table_of(a, dict_header(a, dict));
  return t == nullptr ? 0 : static_cast<std::size_t>(t->live);
}

void ManagerCore::dict_clear(const SharedRef& dict) {
  Locked a(dict, kDict);
  DictHeader* d = dict_header(a, dict);
  const std::uint64_t off = d->table;
  if (off == 0) return;
  commit(d->table, 0);
  crash_point(ManagerCrashPoint::dict_detached);
  // Unreachable from here on: a death while freeing leaks the rest.
  Table* t = a.at<Table>(off);
  for (std::uint64_t i = 0; i < t->capacity; ++i) {
    const std::uint64_t s = t->slots()[i];
    if (s != kEmpty && s != kTombstone) free_entry(a, s & kOffsetMask);
  }
  a.free(off);
}

void ManagerCore::dict_update(const SharedRef& dict, ByteSpan key, Updater f) {
  const std::uint64_t hash = key_hash(dict, key, kDict);
  Locked a(dict, kDict);
  DictHeader* d = dict_header(a, dict);
  const Probe p = find(a, table_of(a, d), hash, key);
  if (p.entry != nullptr) {
    const ByteSpan old = entry_value(a, p.entry);
    replace_value(a, p.entry, f(&old));
  } else {
    insert(a, d, p, hash, key, f(nullptr));
  }
}

void ManagerCore::dict_merge(const SharedRef& dict, const EncodedRun& pairs, Combiner op) {
  const std::size_t n = pairs.ends.size() / 2;
  std::vector<std::uint64_t> hashes(n);
  for (std::size_t i = 0; i < n; ++i) hashes[i] = key_hash(dict, run_entry(pairs, 2 * i), kDict);
  Locked a(dict, kDict);
  DictHeader* d = dict_header(a, dict);
  for (std::size_t i = 0; i < n; ++i) {
    const ByteSpan key = run_entry(pairs, 2 * i);
    const Probe p = find(a, table_of(a, d), hashes[i], key);
    if (p.entry != nullptr)
      replace_value(a, p.entry, op(i, entry_value(a, p.entry)));
    else
      insert(a, d, p, hashes[i], key, run_entry(pairs, 2 * i + 1));
  }
}

void ManagerCore::dict_items(const SharedRef& dict, EncodedRun& out, bool with_values) {
  Locked a(dict, kDict);
  Table* t = table_of(a, dict_header(a, dict));
  if (t == nullptr) return;
  out.ends.reserve(out.ends.size() + t->live * (with_values ? 2 : 1));
  const auto append = [&out](ByteSpan b) {
    out.bytes.insert(out.bytes.end(), b.begin(), b.end());
    out.ends.push_back(out.bytes.size());
  };
  for (std::uint64_t i = 0; i < t->capacity; ++i) {
    const std::uint64_t s = t->slots()[i];
    if (s == kEmpty || s == kTombstone) continue;
    auto* e = a.at<Entry>(s & kOffsetMask);
    append({e->key(), static_cast<std::size_t>(e->key_len)});
    if (with_values) append(entry_value(a, e));
  }
}

// ---- list -----------------------------------------------------------------------------------

namespace {

bool inline_item(std::uint64_t w) noexcept { return (w & 1) != 0; }

ByteSpan item_value(const Arena& a, const std::uint64_t& w) noexcept {
  if (inline_item(w))
    return {reinterpret_cast<const std::byte*>(&w) + 1, static_cast<std::size_t>((w >> 1) & 7)};
  return {a.bytes(w + 8), static_cast<std::size_t>(*a.at<std::uint64_t>(w))};
}

std::uint64_t store_item(Arena& a, ByteSpan value) {
  if (value.size() <= kInlineItem) {
    std::uint64_t w = 1 | (std::uint64_t{value.size()} << 1);
    if (!value.empty())
      std::memcpy(reinterpret_cast<std::byte*>(&w) + 1, value.data(), value.size());
    return w;
  }
  const std::uint64_t blob = a.alloc(8 + value.size());
  *a.at<std::uint64_t>(blob) = value.size();
  std::memcpy(a.bytes(blob + 8), value.data(), value.size());
  return blob;
}

void free_item(Arena& a, std::uint64_t w) noexcept {
  if (!inline_item(w)) a.free(w);
}

}  // namespace

void ManagerCore::list_extend(const SharedRef& list, ByteSpan bytes,
                              std::span<const std::uint64_t> ends) {
  if (ends.empty()) return;
  Locked a(list, kList);
  ListHeader* l = list_header(a, list);
  const std::uint64_t size = l->size;
  const std::uint64_t n = ends.size();
  std::uint64_t cap = l->items == 0 ? 0 : a.at<ItemArray>(l->items)->capacity;
  if (size + n > cap) {
    // A larger array, complete before one store installs it.
    const std::uint64_t new_cap = std::max<std::uint64_t>(8, std::bit_ceil(size + n));
    const std::uint64_t off = a.alloc(sizeof(ItemArray) + new_cap * 8);
    auto* arr = a.at<ItemArray>(off);
    arr->capacity = new_cap;
    arr->reserved = 0;
    const std::uint64_t old = l->items;
    if (old != 0) std::memcpy(arr->slots(), a.at<ItemArray>(old)->slots(), size * 8);
    commit(l->items, off);
    if (old != 0) a.free(old);
    cap = new_cap;
  }
  // Slots past `size` are nobody's: fill them, then publish them all with one store.
  std::uint64_t* slots = a.at<ItemArray>(l->items)->slots();
  std::uint64_t i = 0;
  try {
    for (; i < n; ++i) {
      const std::uint64_t begin = i == 0 ? 0 : ends[i - 1];
      slots[size + i] = store_item(a, bytes.subspan(begin, ends[i] - begin));
    }
  } catch (...) {
    while (i > 0) free_item(a, slots[size + --i]);
    throw;
  }
  crash_point(ManagerCrashPoint::list_filled);
  commit(l->size, size + n);
}

bool ManagerCore::list_get(const SharedRef& list, std::size_t index,
                           std::vector<std::byte>& value) {
  Locked a(list, kList);
  ListHeader* l = list_header(a, list);
  if (index >= l->size) return false;
  const ByteSpan v = item_value(a, a.at<ItemArray>(l->items)->slots()[index]);
  value.assign(v.begin(), v.end());
  return true;
}

bool ManagerCore::list_set(const SharedRef& list, std::size_t index, ByteSpan value) {
  Locked a(list, kList);
  ListHeader* l = list_header(a, list);
  if (index >= l->size) return false;
  std::uint64_t& slot = a.at<ItemArray>(l->items)->slots()[index];
  const std::uint64_t old = slot;
  commit(slot, store_item(a, value));
  free_item(a, old);
  return true;
}

std::size_t ManagerCore::list_size(const SharedRef& list) {
  Locked a(list, kList);
  return static_cast<std::size_t>(list_header(a, list)->size);
}

void ManagerCore::list_clear(const SharedRef& list) {
  Locked a(list, kList);
  ListHeader* l = list_header(a, list);
  const std::uint64_t size = l->size;
  const std::uint64_t items = l->items;
  if (items == 0) return;
  commit(l->size, 0);
  commit(l->items, 0);
  std::uint64_t* slots = a.at<ItemArray>(items)->slots();
  for (std::uint64_t i = 0; i < size; ++i) free_item(a, slots[i]);
  a.free(items);
}

void ManagerCore::list_items(const SharedRef& list, EncodedRun& out) {
  Locked a(list, kList);
  ListHeader* l = list_header(a, list);
  if (l->size == 0) return;
  const std::uint64_t* slots = a.at<ItemArray>(l->items)->slots();
  out.ends.reserve(l->size);
  for (std::uint64_t i = 0; i < l->size; ++i) {
    const ByteSpan v = item_value(a, slots[i]);
    out.bytes.insert(out.bytes.end(), v.begin(), v.end());
    out.ends.push_back(out.bytes.size());
  }
}

void ManagerCore::crash_at_for_testing(ManagerCrashPoint point, int nth) noexcept {
  arena::g_crash_countdown = nth;
  arena::g_crash_point = static_cast<int>(point);
}

void throw_key_error() { throw std::out_of_range("mproc::SharedDict::at: key not found"); }

void throw_attribute_error(std::string_view name) { throw AttributeError(std::string(name)); }

void throw_attribute_type(std::string_view name, std::string_view held, std::string_view wanted) {
  throw std::invalid_argument(fmt::format(
      "mproc::SharedNamespace: attribute '{}' was set as {}; get<{}> cannot read it", name, held, wanted));
}

void throw_index_error(std::size_t index) {
  throw std::out_of_range(fmt::format("mproc::SharedList: index {} is out of range", index));
}

}  // namespace mproc::detail

namespace mproc {

Manager::Manager(ManagerOptions options) : ref_(detail::ManagerCore::create(options.capacity)) {}

std::size_t Manager::bytes_used() const { return detail::ManagerCore::bytes_used(ref_); }

}  // namespace mproc
