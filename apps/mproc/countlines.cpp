// `mproc countlines PATH...`: the lines of each file, one pool task per file, as `wc -l`
// counts them (newline bytes). Directories are walked, their files in sorted order; the
// output keeps the order of the arguments and the walk, then a total.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <fmt/core.h>

#include "commands.hpp"
#include "compute.hpp"
#include <mproc/pool.hpp>

namespace mproc::cli {
namespace {

namespace fs = std::filesystem;

/// What a worker reports for one file: its line count, or why it could not be read.
/// An error travels as a value so that --skip-errors can go on with the other files.
struct FileLines {
  std::uint64_t lines = 0;
  std::string error;
  template <class A>
  void serialize(A& ar) {
    ar(lines, error);
  }
};

FileLines count_file(const std::string& path) {
  FileLines r;
  r.error = read_input(path, [&](std::string_view piece) {
    r.lines += static_cast<std::uint64_t>(std::count(piece.begin(), piece.end(), '\n'));
  });
  return r;
}

struct Options {
  ComputeOptions common;
  std::vector<std::string> paths;
  bool skip_errors = false;
};

/// Expands the arguments into files: a directory's regular files recursively, sorted.
/// A problem is an error (UsageError), or with --skip-errors a warning.
std::vector<std::string> collect(const Options& o) {
  std::vector<std::string> out;
  auto problem = [&](const std::string& what) {
    if (!o.skip_errors) throw UsageError(what);
    fmt::print(stderr, "mproc countlines: warning: skipping {}\n", what);
  };
  walk_paths(o.paths, problem, [&](const fs::path& p) {
    if (p != "-" && ::access(p.c_str(), R_OK) != 0)
      problem(fmt::format("cannot open '{}': {}", p.string(), std::strerror(errno)));
    else
      out.push_back(p.string());
  });
  return out;
}

int run(const Options& o) {
  check_compute_options(o.common);
  const std::vector<std::string> files = collect(o);
  Pool pool = make_pool(o.common);
  const auto start = std::chrono::steady_clock::now();
  // One task per file: a chunk of small files would wait behind one big one.
  MapOptions opts = o.common.map_options("counting", "files");
  if (opts.chunksize == 0) opts.chunksize = 1;
  // Standard input is this process's: read it here, the other paths in the workers.
  std::vector<std::string> in_workers = files;
  for (auto& f : in_workers)
    if (f == "-") f.clear();
  std::vector<FileLines> results = pool.map(
      [](const std::string& f) { return f.empty() ? FileLines{} : count_file(f); }, in_workers,
      opts);
  for (std::size_t i = 0; i < files.size(); ++i)
    if (files[i] == "-") results[i] = count_file("-");
  const double seconds = seconds_since(start);

  std::uint64_t total = 0;
  std::vector<bool> counted(files.size());
  for (std::size_t i = 0; i < files.size(); ++i) {
    // A file that vanished or became unreadable between the walk and the count.
    if (!results[i].error.empty()) {
      if (!o.skip_errors) throw UsageError(results[i].error);
      fmt::print(stderr, "mproc countlines: warning: skipping {}\n", results[i].error);
      continue;
    }
    counted[i] = true;
    total += results[i].lines;
  }

  if (o.common.json) {
    std::vector<JsonObject> list;
    for (std::size_t i = 0; i < files.size(); ++i)
      if (counted[i]) list.emplace_back().add("path", files[i]).add("lines", results[i].lines);
    JsonObject j;
    j.add("command", "countlines").add("files", std::move(list)).add("total", total);
    j.add_pool(o.common, pool.workers()).add("seconds", seconds);
    write_stdout(j.str() + "\n");
  } else {
    const std::size_t width = fmt::formatted_size("{}", total);
    std::string out;
    for (std::size_t i = 0; i < files.size(); ++i)
      if (counted[i]) out += fmt::format("{:>{}} {}\n", results[i].lines, width, files[i]);
    out += fmt::format("{:>{}} total\n", total, width);
    write_stdout(out);
  }
  if (!o.common.quiet)
    fmt::print(stderr, "mproc countlines: {}, {}, {} ({}), {:.3f} s\n",
               plural(static_cast<std::uint64_t>(std::count(counted.begin(), counted.end(), true)), "file"),
               plural(total, "line"), plural(pool.workers(), "worker"), o.common.backend, seconds);
  return ok;
}

}  // namespace

void add_countlines(CLI::App& app, int* exit_code) {
  auto o = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand("countlines", "Count the lines of files, as wc -l does");
  cmd->add_option("paths", o->paths, "Files or directories")->required();
  cmd->add_flag("--skip-errors", o->skip_errors,
                "Warn about and skip files that cannot be read");
  add_compute_options(*cmd, o->common);
  cmd->footer(
      "Count the lines of files as `wc -l` does (newline bytes), one pool task per\n"
      "file. Directories are walked (files in sorted order). Prints \"count path\" per\n"
      "file in argument order, then \"count total\".\n"
      "\n"
      "Exit codes: 0 success, 1 some tasks failed, 2 usage or input error.");
  cmd->callback([o, exit_code] { run_command("countlines", exit_code, [&] { return run(*o); }); });
}

}  // namespace mproc::cli
