// mproc::lines(path): the lines of a text file as a lazy input range, for Pool::imap,
// imap_unordered and map (Python's `for line in open(path)` handed to a Pool):
//
//   for (auto n : pool.imap(count_words, mproc::lines("big.txt"), {.chunksize = 256})) ...
//   std::vector<std::size_t> lengths = pool.map(length, mproc::lines("big.txt"), {.chunksize = 64});
//
// Memory. The range reads the file in blocks of a fixed size (kLinesBlockBytes) and holds
// one block plus the current line, whatever the size of the file; it never reads the file
// first. The pool pulls lines as it sends them: imap and imap_unordered keep a bounded
// window of lines in flight, and map pulls lines as workers take chunks (the results, one
// per line, are what grows), on every backend. map_async and starmap on the thread
// backend index their input, so they collect the lines into a vector first.
//
// Lines. Each element is a line without its end: a line ends at '\n', and a "\r\n" end
// is removed whole (a Windows file gives the same lines as its Unix twin); a '\r'
// elsewhere stays in the line. A last line without '\n' is still a line; an empty file has
// no lines; an empty line is an empty string. Bytes are passed through as they are (no
// decoding).
//
// Lifetime. The file is opened by lines() and closed when the range is destroyed. The
// range is single-pass and move-only; it is advanced by one thread at a time (a Pool
// advances it from its dispatcher thread; keep an lvalue range alive while the pool uses
// it).
#pragma once

#include <cstddef>
#include <filesystem>
#include <iterator>
#include <memory>
#include <ranges>
#include <string>

#include "export.hpp"

namespace mproc {

/// How many bytes of the file a Lines range holds at most, besides the current line.
inline constexpr std::size_t kLinesBlockBytes = 64 * 1024;

namespace detail {

/// An open file read block by block, cut into lines. Implemented in libmproc.
class MPROC_API LineReader {
 public:
  /// Opens `path` for reading. Throws std::system_error naming the path if it cannot be
  /// opened or is a directory.
  explicit LineReader(const std::filesystem::path& path);
  ~LineReader();
  LineReader(const LineReader&) = delete;
  LineReader& operator=(const LineReader&) = delete;

  /// Reads the next line into line(); false at the end of the file. Throws
  /// std::system_error naming the path if a read fails.
  bool next();
  const std::string& line() const noexcept { return line_; }
  /// Whether next() has returned false.
  bool done() const noexcept { return done_; }
  /// Bytes read from the file but not yet handed out as lines (at most kLinesBlockBytes).
  std::size_t buffered() const noexcept { return end_ - at_; }

 private:
  bool fill();

  int fd_ = -1;
  std::string path_;
  std::unique_ptr<char[]> block_;
  std::size_t at_ = 0, end_ = 0;
  bool eof_ = false;
  bool done_ = false;
  std::string line_;
};

}  // namespace detail

/// The lines of a file, read lazily (see the top of this header). Made by mproc::lines.
/// Single-pass and move-only. Not thread-safe: one thread advances it at a time.
class Lines : public std::ranges::view_interface<Lines> {
 public:
  class iterator {
   public:
    using value_type = std::string;
    using difference_type = std::ptrdiff_t;
    using iterator_concept = std::input_iterator_tag;

    iterator() = default;
    /// The current line, valid until the next increment.
    const std::string& operator*() const noexcept { return reader_->line(); }
    const std::string* operator->() const noexcept { return &reader_->line(); }
    /// Reads the next line. Throws std::system_error if the read fails.
    iterator& operator++() {
      if (!reader_->next()) reader_ = nullptr;
      return *this;
    }
    void operator++(int) { ++*this; }
    friend bool operator==(const iterator& it, std::default_sentinel_t) noexcept {
      return it.reader_ == nullptr;
    }

   private:
    friend class Lines;
    explicit iterator(detail::LineReader* reader) : reader_(reader) {}
    detail::LineReader* reader_ = nullptr;
  };

  /// A range of no lines (to assign another to).
  Lines() = default;
  /// Opens `path`. Throws std::system_error naming the path if it cannot be opened.
  explicit Lines(const std::filesystem::path& path)
      : reader_(std::make_unique<detail::LineReader>(path)) {}
  Lines(Lines&&) noexcept = default;
  Lines& operator=(Lines&&) noexcept = default;

  /// Reads the first line not yet handed out (single pass: a second begin() goes on where
  /// the first stopped). Throws std::system_error if the read fails.
  iterator begin() {
    if (!reader_) return iterator();
    if (!started_) {
      started_ = true;
      reader_->next();
    }
    return iterator(reader_->done() ? nullptr : reader_.get());
  }
  std::default_sentinel_t end() const noexcept { return {}; }

  /// Bytes of the file held in memory besides the current line (at most kLinesBlockBytes).
  std::size_t buffered() const noexcept { return reader_ ? reader_->buffered() : 0; }

 private:
  std::unique_ptr<detail::LineReader> reader_;
  bool started_ = false;
};

/// The lines of the file at `path`, without their ends, read lazily in bounded memory.
/// Opens the file now: throws std::system_error (one line naming the path and the OS's
/// reason) if it is missing, unreadable or a directory.
inline Lines lines(const std::filesystem::path& path) { return Lines(path); }

}  // namespace mproc
