// The mproc command-line tool. Exit codes: 0 success, 1 some tasks failed,
// 2 usage or input error (one line on stderr, never a stack dump); `mproc run` follows GNU
// parallel: the number of failed jobs, capped at 101, and 255 for usage errors.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/core.h>

#include "commands.hpp"
#include "text.hpp"
#include <mproc/runtime.hpp>
#include <mproc/version.hpp>

namespace {

/// The first argument that is not an option names the subcommand (the top level has only
/// --help and --version, which take no value). Returns the one-line error for a name that
/// is no subcommand, with the nearest name when it is close; "" when all is well.
std::string check_subcommand(const CLI::App& app, int argc, char** argv) {
  std::string_view given;
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if (a == "--") break;
    if (a.empty() || a[0] != '-') {
      given = a;
      break;
    }
  }
  if (given.empty()) return {};
  std::string best;
  std::size_t best_distance = SIZE_MAX;
  for (const CLI::App* sub : app.get_subcommands([](const CLI::App*) { return true; })) {
    const std::string& name = sub->get_name();
    if (name == given) return {};
    const std::size_t d = mproc::cli::edit_distance(given, name);
    if (d < best_distance) {
      best_distance = d;
      best = name;
    }
  }
  if (mproc::cli::is_typo_of(best_distance, best))
    return fmt::format("unknown subcommand '{}'; did you mean '{}'?", given, best);
  return fmt::format("unknown subcommand '{}' (see mproc --help)", given);
}

}  // namespace

int main(int argc, char** argv) {
  // Under mpirun, ranks other than 0 serve the pool's tasks inside the Runtime and never
  // get here; rank 0 parses the command line and runs the subcommand.
  mproc::Runtime runtime(argc, argv);
  CLI::App app{"mproc: Python's multiprocessing, done properly in C++20"};
  app.set_version_flag("--version", mproc::version_string);
  app.require_subcommand(1);
  app.footer(
      "Run `mproc SUBCOMMAND --help` for a subcommand's options.\n"
      "Exit codes: 0 success, 1 some tasks failed, 2 usage or input error;\n"
      "`mproc run` exits with the number of failed jobs, at most 101 (255:\n"
      "usage error), as GNU parallel does.");

  int exit_code = mproc::cli::ok;
  mproc::cli::add_info(app, &exit_code);
  mproc::cli::add_wordcount(app, &exit_code);
  mproc::cli::add_countlines(app, &exit_code);
  mproc::cli::add_pi(app, &exit_code);
  mproc::cli::add_dot(app, &exit_code);
  mproc::cli::add_rangecount(app, &exit_code);
  mproc::cli::add_run(app, &exit_code);
  mproc::cli::add_trace_view(app, &exit_code);
  // `mproc scaling [OPTIONS] -- COMMAND...`: the command's words are never CLI11's, even
  // those that look like options of scaling (--json, --help).
  std::vector<std::string> timed;
  if (argc >= 2 && std::string_view(argv[1]) == "scaling")
    for (int i = 2; i < argc; ++i)
      if (std::string_view(argv[i]) == "--") {
        timed.assign(argv + i + 1, argv + argc);
        argc = i;
        break;
      }
  mproc::cli::add_scaling(app, &exit_code, std::move(timed));

  // `mproc run` parses GNU parallel's options itself: nothing after `run` is CLI11's.
  if (argc >= 2 && std::string_view(argv[1]) == "run")
    return mproc::cli::run_main(std::vector<std::string>(argv + 2, argv + argc));
  if (const std::string error = check_subcommand(app, argc, argv); !error.empty()) {
    fmt::print(stderr, "mproc: {}\n", error);
    return mproc::cli::usage_error;
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    fmt::print(stderr, "mproc: {}\n", e.what());
    return mproc::cli::usage_error;
  } catch (const std::exception& e) {
    fmt::print(stderr, "mproc: {}\n", e.what());
    return mproc::cli::usage_error;
  }
  return exit_code;
}
