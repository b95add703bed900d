// Word counting as the Python reference does it: split on whitespace (Python's
// str.split() set, including the Unicode spaces), lower-case, keep the first run of
// [a-z-]. Used by `mproc wordcount`, compare_mpi and the tests.
//
// Three tokenizers compute the same counts: the scalar one, byte by byte (the reference,
// and the one for CPUs other than x86-64), and two that classify 64 bytes at a time with
// SSE2 (every x86-64) or AVX2 (chosen at run time when the CPU has it).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace mproc::words {

/// `bytes` of zeroed memory aligned to `align`, and its release (for ZeroedAllocator).
void* allocate_zeroed(std::size_t bytes, std::size_t align);
void free_zeroed(void* p, std::size_t bytes, std::size_t align) noexcept;

/// Allocates zeroed memory for a table's slots, and leaves a slot it is asked to value-
/// initialize as it is (already zero), so a new table's slots are written once, by the
/// counting. Arrays of 2 MiB or more are mappings of their own, in transparent huge pages
/// where the kernel allows (madvise): a book's table of 8 MiB then costs 4 page faults
/// instead of 2,048, which took more of a word count's time than merging the tables.
/// Only for vectors made at their size and never resized: a resize within the capacity
/// would leave the new elements as the old ones were.
template <class T>
struct ZeroedAllocator {
  using value_type = T;
  ZeroedAllocator() = default;
  template <class U>
  ZeroedAllocator(const ZeroedAllocator<U>&) noexcept {}
  T* allocate(std::size_t n) { return static_cast<T*>(allocate_zeroed(n * sizeof(T), alignof(T))); }
  void deallocate(T* p, std::size_t n) noexcept { free_zeroed(p, n * sizeof(T), alignof(T)); }
  template <class U, class... Args>
  void construct(U* p, Args&&... args) {
    if constexpr (sizeof...(Args) > 0) ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
  }
  template <class U>
  bool operator==(const ZeroedAllocator<U>&) const noexcept { return true; }
};

/// Word -> count, as an open-addressing table. A word of at most 16 bytes is its own key:
/// it lies in its slot, zero-padded, and is found by comparing two 64-bit words, with no
/// pointer to follow; a longer one keeps its first 16 bytes there and all of them in one
/// arena. No allocation per word, and tables merge without hashing a word's bytes again.
/// Several times faster than std::unordered_map<std::string, ...> for counting.
/// Serializable (a record per word), so it can be a map_reduce or fold partial.
class Counts {
 public:
  Counts() : slots_(64) {}

  /// Adds `n` to the count of `w`.
  void add(std::string_view w, std::uint64_t n = 1);
  /// add() for a word of len <= 16 bytes given as its bytes zero-padded to 16 and copied
  /// (as memcpy copies) into lo (bytes 0-7) and hi (bytes 8-15). Words hold no zero byte.
  /// The tokenizers' hot path.
  void add_short(std::uint64_t lo, std::uint64_t hi, std::uint32_t len, std::uint64_t n = 1) {
    add_short(lo, hi, len, n, short_hash(lo, hi));
  }
  /// add_short() given the word's short_hash().
  void add_short(std::uint64_t lo, std::uint64_t hi, std::uint32_t len, std::uint64_t n,
                 std::uint64_t h) {
    for (std::size_t i = h & mask_;; i = (i + 1) & mask_) {
      Slot& s = slots_[i];
      if (s.count == 0) return insert_short(s, lo, hi, len, n);
      if (s.lo == lo && s.hi == hi && s.len == len) {
        s.count += n;
        return;
      }
    }
  }
  /// Asks the CPU to bring in the slot where a word of hash `h` would be looked for first.
  void prefetch(std::uint64_t h) const noexcept { __builtin_prefetch(&slots_[h & mask_]); }
  /// Adds every count of `other`.
  void merge(const Counts& other);
  /// merge(), leaving `other` empty. Its slots, cleared as they are read, are kept for the
  /// next table of their size this thread makes (a block's table is a MiB: the kernel
  /// would otherwise zero fresh pages for every block).
  void absorb(Counts&& other);
  /// The count of `w` (0 if absent).
  std::uint64_t count(std::string_view w) const;
  std::size_t size() const noexcept { return used_; }
  /// Makes room for `words` distinct words without growing.
  void reserve(std::size_t words);

  /// Calls f(word, count) for every word, in no particular order.
  template <class F>
  void for_each(F&& f) const {
    for (const Slot& s : slots_)
      if (s.count != 0) f(word(s), s.count);
  }

  friend bool operator==(const Counts& a, const Counts& b);

  /// As the number of words, a record of 28 bytes per word (its two 64-bit halves, its
  /// count and its length, as they lie in its slot), and the bytes of the words longer
  /// than 16 bytes one after another. Written from the slots and read back from the
  /// encoded bytes themselves, with no array in between.
  template <class A>
  void serialize(A& ar) {
    if constexpr (A::is_saving) {
      save(ar);
    } else {
      std::uint64_t n = 0;
      ar(n);
      if (n > ar.remaining() / record_bytes)
        throw_corrupt("more words than bytes");  // before n * record_bytes can overflow
      const std::span<const std::byte> records = ar.read_span(n * record_bytes);
      std::string long_words;
      ar(long_words);
      load(records, long_words);
    }
  }

  /// The table's hash of a word: for up to 16 bytes, the 128-bit product of its two
  /// zero-padded halves (each xor-ed with a constant no word can equal), folded to 64 bits;
  /// for longer words XXH3 (64-bit).
  static std::uint64_t hash(std::string_view w) noexcept;
  static std::uint64_t short_hash(std::uint64_t lo, std::uint64_t hi) noexcept {
    // Each constant has a byte >= 0x80, which no word has: neither factor is ever zero.
    __extension__ typedef unsigned __int128 u128;
    const u128 m = static_cast<u128>(lo ^ 0x9E3779B97F4A7C15u) * (hi ^ 0xC2B2AE3D27D4EB4Fu);
    return static_cast<std::uint64_t>(m) ^ static_cast<std::uint64_t>(m >> 64);
  }

 private:
  /// One cache line holds two slots, and no slot straddles two.
  struct alignas(32) Slot {
    std::uint64_t lo = 0, hi = 0;  ///< the word's first 16 bytes, zero-padded
    std::uint64_t count = 0;       ///< 0: the slot is free
    std::uint32_t len = 0;
    std::uint32_t offset = 0;  ///< in arena_, of a word longer than 16 bytes
  };
  static_assert(sizeof(Slot) == 32);
  static_assert(std::is_trivially_destructible_v<Slot>);
  /// Slots start as zero bytes, which is Slot{}: ZeroedAllocator writes nothing for them.
  using SlotVector = std::vector<Slot, ZeroedAllocator<Slot>>;
  std::string_view word(const Slot& s) const noexcept {
    // A short word's bytes are lo's then hi's: read them as the bytes of the slot.
    return s.len <= 16 ? std::string_view(reinterpret_cast<const char*>(&s), s.len)
                       : std::string_view(arena_.data() + s.offset, s.len);
  }
  std::uint64_t slot_hash(const Slot& s) const noexcept {
    return s.len <= 16 ? short_hash(s.lo, s.hi) : hash(word(s));
  }
  void add_long(std::string_view w, std::uint64_t n);
  // Out of line: once per distinct word, and kept out of the tokenizers' hot loops.
  [[gnu::noinline]] void insert_short(Slot& s, std::uint64_t lo, std::uint64_t hi,
                                      std::uint32_t len, std::uint64_t n);
  /// Words a table of `slots` slots holds before it grows: three quarters. Linear probing
  /// at that load costs the counting little, since the frequent words, the ones counted
  /// most, came first and sit where their hash points; it keeps a book's whole count in
  /// 8 MiB of slots instead of 16.
  static constexpr std::size_t max_used(std::size_t slots) noexcept { return slots / 4 * 3; }
  void grow();
  void rehash(std::size_t slots);
  /// `slots` cleared slots: the ones absorb() last kept on this thread if they are as
  /// many, else new ones.
  static SlotVector cleared_slots(std::size_t slots);
  /// This thread's kept slots (cleared), at most kept_slots_max of them.
  static SlotVector& kept_slots() noexcept {
    thread_local SlotVector kept;
    return kept;
  }
  static constexpr std::size_t kept_slots_max = std::size_t{1} << 17;  ///< 4 MiB
  /// A word's record in the encoding: a slot's first 28 bytes (lo, hi, count, len).
  static constexpr std::size_t record_bytes = 28;
  static_assert(offsetof(Slot, len) + sizeof(std::uint32_t) == record_bytes);
  template <class A>
  void save(A& ar) const {
    ar.reserve(8 + record_bytes * used_ + 8 + arena_.size());  // a book's table: 3 MB at once
    ar(static_cast<std::uint64_t>(used_));
    std::string long_words;
    std::byte batch[record_bytes * 256];  // records go out 256 at a time
    std::size_t in_batch = 0;
    for (const Slot& s : slots_) {
      if (s.count == 0) continue;
      std::memcpy(batch + record_bytes * in_batch, &s, record_bytes);
      if (++in_batch == 256) {
        ar.write_bytes(batch, sizeof batch);
        in_batch = 0;
      }
      if (s.len > 16) long_words.append(word(s));
    }
    ar.write_bytes(batch, record_bytes * in_batch);
    ar(long_words);
  }
  void load(std::span<const std::byte> records, std::string_view long_words);
  [[noreturn]] static void throw_corrupt(const char* what);

  SlotVector slots_;
  std::size_t mask_ = 63;  ///< slots_.size() - 1
  std::string arena_;      ///< the words longer than 16 bytes
  std::size_t used_ = 0;
};

/// The ways of splitting a text into words; every one gives the same counts.
enum class Tokenizer { scalar, sse2, avx2 };

/// "scalar", "sse2" or "avx2".
const char* tokenizer_name(Tokenizer k) noexcept;
/// Whether this build and CPU can run `k` (scalar: always; sse2: on x86-64; avx2: on an
/// x86-64 CPU with AVX2).
bool tokenizer_available(Tokenizer k) noexcept;
/// The fastest available tokenizer, the one count_block uses.
Tokenizer fastest_tokenizer() noexcept;

/// Counts the words of the tokens that start in [begin, end) of `text` (a token may run
/// past `end`: it belongs to the block it starts in). Splitting a text into blocks at any
/// byte offsets and counting each block gives the same total as counting the whole text.
/// With fastest_tokenizer(). Thread-safe for distinct `out`s.
void count_block(std::string_view text, std::size_t begin, std::size_t end, Counts& out);
/// count_block with tokenizer `k`. Throws std::invalid_argument if !tokenizer_available(k).
void count_block(std::string_view text, std::size_t begin, std::size_t end, Counts& out,
                 Tokenizer k);

/// Counts every word of `text`.
inline void count_text(std::string_view text, Counts& out) {
  count_block(text, 0, text.size(), out);
}

/// One work item of a word count: the tokens starting in [begin, end) of a file, or of an
/// in-memory corpus when `path` is empty.
struct Block {
  std::string path;
  std::uint64_t begin = 0;
  std::uint64_t end = 0;
  template <class A>
  void serialize(A& ar) {
    ar(path, begin, end);
  }
};

/// Counts block `b` of its file (read through a read-only mapping), or of `corpus` when
/// b.path is empty. Throws std::runtime_error naming the file if it cannot be read.
Counts count_block(const Block& b, std::string_view corpus);
/// count_block(b, corpus), counted into `into`.
void count_block(const Block& b, std::string_view corpus, Counts& into);

/// Folds `from` into `into`, the smaller table into the larger: a map_reduce reduction
/// and a fold's combine.
void merge(Counts& into, Counts&& from);


/// A deterministic synthetic corpus of about `bytes` bytes: Zipf-distributed words from a
/// fixed vocabulary, with capitals, punctuation and line breaks, from `seed`. Calls
/// `progress(bytes made so far)` about every MiB, when given.
std::string synthetic_corpus(std::size_t bytes, std::uint64_t seed = 42,
                             const std::function<void(std::size_t)>& progress = {});

}  // namespace mproc::words
