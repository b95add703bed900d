// A program outside the mproc tree that uses the installed (or embedded) library:
// a header-only part (serialize), a compiled part (Process, cpu_count), an exception
// thrown inside libmproc and caught here by its base class, and a task's exception made
// by libmproc and caught here by its standard type and as a RemoteError.
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>

#include <mproc/mproc.hpp>

int at_two(int x) {
  if (x == 2) throw std::out_of_range("two");
  return x;
}

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

  try {
    mproc::Pool pool({.workers = 1, .backend = mproc::Backend::process});
    (void)pool.map(at_two, mproc::range(0, 4));
    return 13;
  } catch (const std::out_of_range& e) {
    const auto* r = dynamic_cast<const mproc::RemoteError*>(&e);
    if (r == nullptr || r->type_name() != "std::out_of_range" || r->task_index() != 2u) return 14;
  }

  std::printf("consumer ok: cpu_count=%u version=%s\n", mproc::cpu_count(), mproc::version_string);
  return 0;
}
