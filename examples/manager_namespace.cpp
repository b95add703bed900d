// A Manager's Namespace: attributes that every process sees. Four children each add
// their share to ns.total under a Lock and leave a message; reading an attribute that
// no one set is an AttributeError, as in Python. Mirrors
//   ns = Manager().Namespace(); ns.total = 0; ns.greeting = "hello"
//   def work(ns, lock, k):
//       with lock: ns.total += k
//       setattr(ns, f"from_{k}", f"{ns.greeting} from {k}")
#include <cstdio>
#include <mutex>
#include <string>
#include <vector>
#include <mproc/mproc.hpp>

int main() {
  mproc::Manager manager;
  auto ns = manager.namespace_();
  ns.set("total", 0L);
  ns.set("greeting", "hello");
  mproc::Lock lock;
  std::vector<mproc::Process> children;
  for (long k = 1; k <= 4; ++k)
    children.emplace_back(
        [=](long share) {
          {
            std::lock_guard hold(lock);  // ns.total += k is a read and then a write
            ns.set("total", ns.get<long>("total") + share * 100);
          }
          ns.set("from_" + std::to_string(share),
                 ns.get<std::string>("greeting") + " from " + std::to_string(share));
        },
        k);
  for (auto& c : children) c.start();
  for (auto& c : children) c.join();

  std::printf("total = %ld\n", ns.get<long>("total"));
  for (const std::string& name : ns.names())
    if (name.rfind("from_", 0) == 0)
      std::printf("%s = %s\n", name.c_str(), ns.get<std::string>(name).c_str());
  try {
    (void)ns.get<long>("colour");
  } catch (const mproc::AttributeError& e) {
    std::printf("AttributeError: %s\n", e.what());
  }
}
