// Two threads, started and joined: Python's threading.Thread(target=..., args=...) is
// std::jthread in C++ (it starts at construction and joins when it goes out of scope,
// or at join()). Threads share this process's memory, so each writes its result where
// the main thread reads it after join(); four more threads add to one counter under a
// std::mutex. Mirrors
//   t1 = threading.Thread(target=square, args=(10,)); t2 = ...(target=cube, args=(10,))
//   t1.start(); t2.start(); t1.join(); t2.join(); print("Done!")
#include <cstdio>
#include <mutex>
#include <thread>
#include <vector>

int main() {
  long square = 0, cube = 0;
  std::jthread t1([&](long n) { square = n * n; }, 10L);  // started here
  std::jthread t2([&](long n) { cube = n * n * n; }, 10L);
  t1.join();
  t2.join();
  std::printf("Square: %ld\nCube: %ld\n", square, cube);

  long counter = 0;
  std::mutex lock;
  {
    std::vector<std::jthread> adders;
    for (int t = 0; t < 4; ++t)
      adders.emplace_back([&] {
        for (int i = 0; i < 100'000; ++i) {
          std::lock_guard hold(lock);  // Python: with lock: counter += 1
          ++counter;
        }
      });
  }  // each jthread joins here
  std::printf("4 threads added %ld\nDone!\n", counter);
}
