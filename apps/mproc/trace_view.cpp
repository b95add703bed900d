// `mproc trace-view FILE -o timeline.html` (placeholder).
#include "commands.hpp"

namespace mproc::cli {
void add_trace_view(CLI::App& app, int* exit_code) {
  auto* cmd = app.add_subcommand("trace-view", "Draw a trace file as an HTML timeline");
  cmd->callback([exit_code] { *exit_code = usage_error; });
}
}  // namespace mproc::cli
