// The subcommands of the mproc tool. Each lives in its own file and registers itself
// on the top-level CLI11 app; its callback returns the process exit code.
#pragma once

#include <string>
#include <vector>

#include <CLI/CLI.hpp>

namespace mproc::cli {

/// Exit codes, as documented in `mproc --help`.
enum ExitCode : int { ok = 0, task_failures = 1, usage_error = 2 };

/// Adds `mproc info`. The callback stores the exit code in `*exit_code`.
void add_info(CLI::App& app, int* exit_code);
/// Adds `mproc wordcount`.
void add_wordcount(CLI::App& app, int* exit_code);
/// Adds `mproc countlines`.
void add_countlines(CLI::App& app, int* exit_code);
/// Adds `mproc pi`.
void add_pi(CLI::App& app, int* exit_code);
/// Adds `mproc dot`.
void add_dot(CLI::App& app, int* exit_code);
/// Adds `mproc rangecount`.
void add_rangecount(CLI::App& app, int* exit_code);
/// Lists `mproc run`, the parallel command runner, in the top-level help.
void add_run(CLI::App& app, int* exit_code);
/// Runs `mproc run` with the words after `run`; returns the exit code (GNU parallel's:
/// failed jobs up to 101, 255 for usage and other errors).
int run_main(const std::vector<std::string>& args);
/// Adds `mproc trace-view`, which draws a trace file as an HTML timeline.
void add_trace_view(CLI::App& app, int* exit_code);
/// Adds `mproc scaling`, which times a command at 1..N workers; `command` is what follows
/// its `--` (main() takes it off before CLI11 parses, so that no word of it is an option).
void add_scaling(CLI::App& app, int* exit_code, std::vector<std::string> command);

}  // namespace mproc::cli
