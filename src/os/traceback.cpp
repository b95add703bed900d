// Capturing the stack at the throw point: the C++ runtime unwinds the stack before any
// handler runs, so a trace taken in the worker's catch block shows only the worker loop.
// mproc interposes __cxa_throw (the function every `throw` expression calls), records
// a backtrace when the calling thread asked for it, and forwards to the C++ runtime's
// own __cxa_throw found with dlsym(RTLD_NEXT). Rethrows (`throw;`,
// std::rethrow_exception) do not pass here, so a trace survives them.
#include "os/traceback.hpp"

#include <cxxabi.h>
#include <dlfcn.h>
#include <execinfo.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <typeinfo>

#include <fmt/format.h>

#include "os/platform.hpp"

namespace mproc::detail {
namespace {

thread_local bool tls_capture = false;
thread_local int tls_frames = 0;
thread_local void* tls_trace[64];

std::string format(void* const* frames, int n) {
  std::string out;
  for (int i = 0; i < n; ++i) {
    Dl_info info{};
    const auto addr = reinterpret_cast<std::uintptr_t>(frames[i]);
    if (::dladdr(frames[i], &info) == 0) {
      fmt::format_to(std::back_inserter(out), "#{} 0x{:x}\n", i, addr);
      continue;
    }
    const char* module = info.dli_fname != nullptr ? info.dli_fname : "?";
    const auto base = reinterpret_cast<std::uintptr_t>(info.dli_fbase);
    if (info.dli_sname != nullptr) {
      int status = 0;
      std::unique_ptr<char, decltype(&std::free)> name(
          abi::__cxa_demangle(info.dli_sname, nullptr, nullptr, &status), &std::free);
      fmt::format_to(std::back_inserter(out), "#{} {} in {}\n", i,
                     status == 0 && name ? name.get() : info.dli_sname, module);
    } else {
      // No symbol (a static function, or an executable linked without -rdynamic):
      // module and offset, for addr2line -f -C -e <module> <offset>.
      fmt::format_to(std::back_inserter(out), "#{} {}+0x{:x}\n", i, module, addr - base);
    }
  }
  return out;
}

}  // namespace

void set_capture_throw_traces(bool on) noexcept { tls_capture = on; }

std::string take_throw_trace() {
  // The trace starts at the throw expression: drop the frames of __cxa_throw itself,
  // ours and any other in the chain (a sanitizer's runtime interposes it too).
  int first = 0;
  for (; first < tls_frames; ++first) {
    Dl_info info{};
    if (::dladdr(tls_trace[first], &info) == 0 || info.dli_sname == nullptr ||
        std::strstr(info.dli_sname, "cxa_throw") == nullptr)
      break;
  }
  std::string s = format(tls_trace + first, tls_frames - first);
  tls_frames = 0;
  return s;
}

std::string current_trace(int skip) {
  void* frames[64];
  const int n = ::backtrace(frames, 64);
  return skip < n ? format(frames + skip + 1, n - skip - 1) : std::string();
}

}  // namespace mproc::detail

// Defined where <cxxabi.h> declares it, so the definition matches that declaration.
namespace __cxxabiv1 {
extern "C" {

using CxaThrow = void (*)(void*, std::type_info*, void (*)(void*));

__attribute__((visibility("default"))) void __cxa_throw(void* thrown, std::type_info* type,
                                                        void (*destroy)(void*)) {
  static const auto real = reinterpret_cast<CxaThrow>(::dlsym(RTLD_NEXT, "__cxa_throw"));
  if (real == nullptr) {
    mproc::detail::write_all(2, "mproc: cannot find the C++ runtime's __cxa_throw\n");
    std::abort();
  }
  if (mproc::detail::tls_capture) {
    // Skip this frame: the trace starts at the throw expression.
    void* frames[65];
    const int n = ::backtrace(frames, 65);
    mproc::detail::tls_frames = n > 1 ? n - 1 : 0;
    for (int i = 1; i < n; ++i) mproc::detail::tls_trace[i - 1] = frames[i];
  }
  real(thrown, type, destroy);
  __builtin_unreachable();
}

}  // extern "C"
}  // namespace __cxxabiv1
