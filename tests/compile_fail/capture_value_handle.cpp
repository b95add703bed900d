// Must NOT compile: a lambda capturing an mproc::Value by value is not trivially copyable
// (a handle counts its references), so it cannot be shipped to a worker process. The test
// checks that the error says what works instead (pass it as the item or bind it), and not
// to capture pointers, which crash a worker for objects created after the pool.
#include <mproc/executor.hpp>
#include <mproc/shared.hpp>

int main() {
  mproc::ProcessPoolExecutor ex(1);
  mproc::Value<long> total(0);
  auto f = [total](int i) { return total += i; };
  return static_cast<int>(ex.submit(f, 3).get());
}
