// A program outside the mproc tree that uses the installed (or embedded) library:
// a header-only part (serialize), a compiled part (Process, cpu_count) and an exception
// thrown inside libmproc and caught here by its base class.
#include <cstdio>
#include <cstdlib>
#include <string>

#include <mproc/mproc.hpp>

int main() {
  auto bytes = mproc::dumps(std::string("consumer"), 42);
  std::string s;
  int n = 0;
  mproc::loads_into(bytes, s, n);
  if (s != "consumer" || n != 42) return 10;

  mproc::Process p([] { std::_Exit(3); });
  p.start();
  p.join();
  if (p.exitcode() != 3) return 11;

  try {
    (void)mproc::loads<int>(std::span<const std::byte>(bytes.data(), 2));
    return 12;
  } catch (const mproc::Error&) {
  }

  std::printf("consumer ok: cpu_count=%u version=%s\n", mproc::cpu_count(), mproc::version_string);
  return 0;
}
