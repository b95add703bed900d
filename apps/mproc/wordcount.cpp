// `mproc wordcount [PATH...]`: the seed exercise. Counts every word across text files
// with a process Pool (map_reduce: each worker merges its own counts), and prints the
// words used more than --min-count times, alphabetically, as "word == count" (or the
// --top K most frequent; or, with --json, one JSON object).
// Without PATH it counts a synthetic corpus generated in memory before the pool starts,
// so the workers read it from their memory snapshot.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <fmt/core.h>

#include "commands.hpp"
#include "compute.hpp"
#include "words.hpp"
#include <mproc/cpu_count.hpp>
#include <mproc/pool.hpp>

namespace mproc::cli {
namespace {

namespace fs = std::filesystem;

constexpr std::uint64_t block_bytes = 256 * 1024;

/// The synthetic corpus; set before the pool starts so every worker has it.
std::string_view g_corpus;

words::Counts count_block_item(words::Block b) { return words::count_block(b, g_corpus); }

struct Options {
  ComputeOptions common;
  std::vector<std::string> paths;
  std::uint64_t min_count = 2000;
  std::uint64_t top = 0;  ///< 0: the --min-count list instead
  std::string size = "50M";
  bool skip_errors = false;
  bool serial = false;
};

std::uint64_t parse_size(const std::string& s) {
  std::size_t pos = 0;
  unsigned long long n = 0;
  try {
    n = std::stoull(s, &pos);
  } catch (...) {
    throw CLI::ValidationError("--size", "not a size: '" + s + "' (e.g. 50M, 1G, 4096)");
  }
  std::string unit = s.substr(pos);
  std::uint64_t mult = 1;
  if (unit == "K" || unit == "k" || unit == "KiB") mult = 1ull << 10;
  else if (unit == "M" || unit == "MiB") mult = 1ull << 20;
  else if (unit == "G" || unit == "GiB") mult = 1ull << 30;
  else if (!unit.empty() || s.find('-') != std::string::npos)
    throw CLI::ValidationError("--size", "not a size: '" + s + "' (e.g. 50M, 1G, 4096)");
  if (n == 0 || n > (64ull << 30) / mult)
    throw CLI::ValidationError("--size", "must be between 1 byte and 64G: '" + s + "'");
  return n * mult;
}

struct Input {
  std::string path;
  std::uint64_t size;
};

/// Checks a regular file: readable, and text (no NUL byte in its first 64 KiB).
std::optional<std::string> check_file(const fs::path& p, std::uint64_t& size) {
  int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return fmt::format("cannot open '{}': {}", p.string(), std::strerror(errno));
  struct stat st {};
  ::fstat(fd, &st);
  size = static_cast<std::uint64_t>(st.st_size);
  char buf[65536];
  ssize_t n = ::read(fd, buf, sizeof buf);
  const int err = errno;
  ::close(fd);
  if (n < 0) return fmt::format("cannot read '{}': {}", p.string(), std::strerror(err));
  if (std::memchr(buf, 0, static_cast<std::size_t>(n)) != nullptr)
    return fmt::format("'{}' is a binary file, not text", p.string());
  return std::nullopt;
}

/// Expands PATH arguments (directories recursively, in sorted order) into readable text
/// files. A problem is an error, or with --skip-errors a warning.
std::vector<Input> collect(const Options& o) {
  std::vector<Input> out;
  auto problem = [&](const std::string& what) {
    if (!o.skip_errors) throw UsageError(what);
    fmt::print(stderr, "mproc wordcount: warning: skipping {}\n", what);
  };
  auto add_file = [&](const fs::path& p) {
    std::uint64_t size = 0;
    if (auto err = check_file(p, size))
      problem(*err);
    else
      out.push_back({p.string(), size});
  };
  walk_paths(o.paths, problem, add_file);
  return out;
}

/// The words to print: the `top` most frequent (count descending, then word), or every
/// word used more than `min_count` times, alphabetically.
std::vector<std::pair<std::string, std::uint64_t>> select_words(const words::Counts& counts,
                                                                const Options& o) {
  std::vector<std::pair<std::string, std::uint64_t>> out;
  if (o.top == 0) {
    counts.for_each([&](std::string_view w, std::uint64_t c) {
      if (c > o.min_count) out.emplace_back(std::string(w), c);
    });
    std::sort(out.begin(), out.end());
    return out;
  }
  counts.for_each([&](std::string_view w, std::uint64_t c) { out.emplace_back(std::string(w), c); });
  auto by_frequency = [](const auto& a, const auto& b) {
    return a.second != b.second ? a.second > b.second : a.first < b.first;
  };
  const std::size_t k = static_cast<std::size_t>(std::min<std::uint64_t>(o.top, out.size()));
  std::partial_sort(out.begin(), out.begin() + static_cast<std::ptrdiff_t>(k), out.end(), by_frequency);
  out.resize(k);
  return out;
}

int run(const Options& o) {
  check_compute_options(o.common);
  std::vector<Input> inputs;
  std::string corpus;
  const bool synthetic = o.paths.empty();
  if (synthetic) {
    corpus = words::synthetic_corpus(parse_size(o.size));
    g_corpus = corpus;
    inputs.push_back({"", corpus.size()});
  } else {
    inputs = collect(o);
    if (inputs.empty()) throw UsageError("no readable text files to count");
  }
  std::vector<words::Block> blocks;
  std::uint64_t bytes = 0;
  for (auto& in : inputs) {
    bytes += in.size;
    for (std::uint64_t b = 0; b < in.size; b += block_bytes)
      blocks.push_back({in.path, b, std::min(in.size, b + block_bytes)});
  }

  const auto start = std::chrono::steady_clock::now();
  words::Counts counts;
  unsigned workers = 1;
  if (o.serial) {
    for (auto& b : blocks) words::merge(counts, count_block_item(b));
  } else {
    Pool pool = make_pool(o.common);
    workers = pool.workers();
    counts = pool.map_reduce(count_block_item, words::merge, blocks, o.common.map_options());
  }
  const double seconds = seconds_since(start);

  const auto selected = select_words(counts, o);
  if (o.common.json) {
    std::vector<JsonObject> list;
    for (auto& [w, c] : selected) list.emplace_back().add("word", w).add("count", c);
    JsonObject j;
    j.add("command", "wordcount").add("words", std::move(list));
    j.add("files", static_cast<std::uint64_t>(synthetic ? 0 : inputs.size()));
    j.add("synthetic", synthetic).add("bytes", bytes).add("distinct", static_cast<std::uint64_t>(counts.size()));
    j.add("serial", o.serial).add_pool(o.common, workers).add("seconds", seconds);
    write_stdout(j.str() + "\n");
  } else {
    std::string out;
    for (auto& [w, c] : selected) out += fmt::format("{} == {}\n", w, c);
    write_stdout(out);
  }
  if (!o.common.quiet)
    fmt::print(stderr, "mproc wordcount: {} {}, {:.1f} MB, {} distinct words, {} {}, {:.3f} s, {:.0f} MB/s\n",
               synthetic ? 1 : inputs.size(), synthetic ? "synthetic corpus" : "files",
               static_cast<double>(bytes) / 1e6, counts.size(), o.serial ? "serial" : "workers:",
               o.serial ? std::string() : std::to_string(workers), seconds,
               static_cast<double>(bytes) / 1e6 / std::max(seconds, 1e-9));
  return ok;
}

}  // namespace

void add_wordcount(CLI::App& app, int* exit_code) {
  auto o = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand(
      "wordcount",
      "Count every word across text files (directories are walked) and print those used more "
      "than --min-count times, alphabetically (or the --top K most frequent). Without PATH, "
      "counts a synthetic corpus.");
  cmd->add_option("paths", o->paths, "Files or directories to count");
  cmd->add_option("--min-count", o->min_count, "Print words used more than this many times")
      ->check(integer_in(0, UINT64_MAX))
      ->capture_default_str();
  cmd->add_option("--top", o->top,
                  "Print the K most frequent words instead (count descending, then word)")
      ->option_text("K")
      ->check(integer_in(1, UINT64_MAX));
  cmd->add_option("--size", o->size, "Size of the synthetic corpus (e.g. 50M, 1G)")
      ->capture_default_str();
  cmd->add_flag("--skip-errors", o->skip_errors,
                "Warn about and skip unreadable or binary files instead of failing");
  cmd->add_flag("--serial", o->serial, "Count in this process, without a pool (for comparison)");
  add_compute_options(*cmd, o->common);
  cmd->footer("Exit codes: 0 success, 1 some tasks failed, 2 usage or input error.");
  cmd->callback([o, exit_code] { run_command("wordcount", exit_code, [&] { return run(*o); }); });
}

}  // namespace mproc::cli
