#include "pool/code_ref.hpp"

#include <elf.h>
#include <link.h>
#include <pthread.h>
#include <sys/auxv.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <exception>
#include <filesystem>
#include <mutex>
#include <stdexcept>
#include <string_view>
#include <system_error>
#include <vector>

#include <fmt/format.h>

#include "mproc/error.hpp"

namespace mproc::detail {
namespace {

/// A PT_LOAD segment as linked: [p_vaddr, p_vaddr + p_memsz). p_memsz, not p_filesz, so
/// that zero-initialised data (.bss) counts as inside.
struct Segment {
  std::uintptr_t begin = 0;
  std::uintptr_t end = 0;
};

struct Module {
  std::string path;  // for messages; "[vdso]" when the dynamic linker gives no name
  std::uintptr_t base = 0;
  std::vector<Segment> segments;
  std::vector<unsigned char> build_id;  // empty when the file has none
  std::uint64_t key = 0;

  /// Whether `offset` (an address minus `base`) lies in one of the loaded segments.
  bool contains(std::uintptr_t offset) const noexcept {
    for (const Segment& s : segments)
      if (offset >= s.begin && offset < s.end) return true;
    return false;
  }
};

/// The dynamic linker's counts of objects loaded and unloaded so far (dlpi_adds,
/// dlpi_subs in dl_iterate_phdr(3)): the module set changed iff one of them did.
struct Generation {
  bool known = false;
  unsigned long long adds = 0;
  unsigned long long subs = 0;

  friend bool operator==(const Generation&, const Generation&) = default;
};

Generation generation_of(const dl_phdr_info& info, std::size_t size) noexcept {
  // Older C libraries pass a shorter struct without the counters.
  if (size < offsetof(dl_phdr_info, dlpi_subs) + sizeof(info.dlpi_subs)) return {};
  return {true, info.dlpi_adds, info.dlpi_subs};
}

Generation current_generation() noexcept {
  Generation g;
  ::dl_iterate_phdr(
      [](dl_phdr_info* info, std::size_t size, void* data) noexcept -> int {
        *static_cast<Generation*>(data) = generation_of(*info, size);
        return 1;  // the counters are the same in every entry: one is enough
      },
      &g);
  return g;
}

constexpr std::uint64_t kFnvOffset = 0xcbf29ce484222325ull;
constexpr std::uint64_t kFnvPrime = 0x100000001b3ull;

std::uint64_t fnv1a(std::uint64_t h, const void* data, std::size_t n) noexcept {
  const auto* p = static_cast<const unsigned char*>(data);
  for (std::size_t i = 0; i < n; ++i) h = (h ^ p[i]) * kFnvPrime;
  return h;
}

/// 0 is reserved for "no module" (a default CodeRef), so it never resolves.
std::uint64_t nonzero(std::uint64_t key) noexcept { return key == 0 ? 1 : key; }

/// FNV-1a of the build-id, after a tag so that it cannot equal a key made from a path.
std::uint64_t build_id_key(const std::vector<unsigned char>& build_id) noexcept {
  constexpr std::string_view tag = "build-id";
  return nonzero(fnv1a(fnv1a(kFnvOffset, tag.data(), tag.size()), build_id.data(),
                       build_id.size()));
}

/// A module without a build-id (linked with --build-id=none) is known by its path and
/// file size: the same on every host where the same file is installed at the same place,
/// and different for most rebuilds. `stat_path` is where to find the file (the
/// executable's is /proc/self/exe, which works even if the file was deleted); a file
/// that cannot be stat'ed (the vDSO has no file) counts as size 0.
std::uint64_t path_key(const std::string& path, const char* stat_path) noexcept {
  struct stat st {};
  std::uint64_t size = ::stat(stat_path, &st) == 0 ? static_cast<std::uint64_t>(st.st_size) : 0;
  unsigned char size_bytes[8];
  for (unsigned char& b : size_bytes) {
    b = static_cast<unsigned char>(size);
    size >>= 8;
  }
  constexpr std::string_view tag = "path";
  std::uint64_t h = fnv1a(kFnvOffset, tag.data(), tag.size());
  h = fnv1a(h, path.c_str(), path.size() + 1);  // with the NUL, so path and size cannot blur
  return nonzero(fnv1a(h, size_bytes, sizeof size_bytes));
}

/// Whether [vaddr, vaddr + size) lies in the file-backed part of a PT_LOAD segment, i.e.
/// is mapped and readable with the file's bytes.
bool mapped(const dl_phdr_info& info, ElfW(Addr) vaddr, std::size_t size) noexcept {
  for (ElfW(Half) i = 0; i < info.dlpi_phnum; ++i) {
    const ElfW(Phdr)& ph = info.dlpi_phdr[i];
    if (ph.p_type == PT_LOAD && vaddr >= ph.p_vaddr && vaddr - ph.p_vaddr <= ph.p_filesz &&
        size <= ph.p_filesz - (vaddr - ph.p_vaddr))
      return true;
  }
  return false;
}

/// The NT_GNU_BUILD_ID note's bytes, read from the loaded image (ld puts .note.gnu.build-id
/// in the first PT_LOAD segment, so no file access is needed); empty if there is none.
std::vector<unsigned char> find_build_id(const dl_phdr_info& info) {
  for (ElfW(Half) i = 0; i < info.dlpi_phnum; ++i) {
    const ElfW(Phdr)& ph = info.dlpi_phdr[i];
    // A note segment outside every PT_LOAD is not in memory; reading it would fault.
    if (ph.p_type != PT_NOTE || !mapped(info, ph.p_vaddr, ph.p_filesz)) continue;
    // Note fields are padded to 4 bytes, or to 8 in a segment aligned to 8
    // (.note.gnu.property on x86-64); see elf(5), "Notes (Nhdr)".
    const std::size_t align = ph.p_align == 8 ? 8 : 4;
    const auto pad = [align](std::size_t n) { return (n + align - 1) / align * align; };
    const auto* notes = reinterpret_cast<const unsigned char*>(info.dlpi_addr + ph.p_vaddr);
    const std::size_t size = ph.p_filesz;
    std::size_t pos = 0;
    while (size - pos >= sizeof(ElfW(Nhdr))) {
      ElfW(Nhdr) nh;
      std::memcpy(&nh, notes + pos, sizeof nh);
      pos += sizeof nh;
      if (pad(nh.n_namesz) > size - pos) break;
      const unsigned char* name = notes + pos;
      pos += pad(nh.n_namesz);
      if (nh.n_descsz > size - pos) break;
      const unsigned char* desc = notes + pos;
      if (nh.n_type == NT_GNU_BUILD_ID && nh.n_namesz == 4 && std::memcmp(name, "GNU", 4) == 0 &&
          nh.n_descsz > 0)
        return {desc, desc + nh.n_descsz};
      pos += std::min(pad(nh.n_descsz), size - pos);
    }
  }
  return {};
}

struct Scan {
  std::vector<Module> modules;
  Generation generation;
  std::exception_ptr error;
};

/// dl_iterate_phdr callback. It must not throw: the dynamic linker holds its lock around
/// the callback and has no cleanup for an exception, so an escaping one would leave the
/// lock held. Failures are carried out in Scan::error.
int collect(dl_phdr_info* info, std::size_t size, void* data) noexcept {
  auto& scan = *static_cast<Scan*>(data);
  try {
    if (scan.modules.empty()) scan.generation = generation_of(*info, size);
    Module m;
    m.path = info->dlpi_name != nullptr ? info->dlpi_name : "";
    m.base = info->dlpi_addr;
    for (ElfW(Half) i = 0; i < info->dlpi_phnum; ++i) {
      const ElfW(Phdr)& ph = info->dlpi_phdr[i];
      if (ph.p_type == PT_LOAD && ph.p_memsz > 0)
        m.segments.push_back({ph.p_vaddr, ph.p_vaddr + ph.p_memsz});
    }
    m.build_id = find_build_id(*info);
    scan.modules.push_back(std::move(m));
    return 0;
  } catch (...) {
    scan.error = std::current_exception();
    return 1;
  }
}

/// The loaded modules in the dynamic linker's load order, the executable first.
Scan scan_modules() {
  Scan scan;
  ::dl_iterate_phdr(collect, &scan);
  if (scan.error) std::rethrow_exception(scan.error);
  if (scan.modules.empty()) throw std::runtime_error("dl_iterate_phdr listed no loaded module");

  // The file work (readlink, stat) runs here, outside the dynamic linker's lock.
  const auto vdso = static_cast<std::uintptr_t>(::getauxval(AT_SYSINFO_EHDR));
  for (std::size_t i = 0; i < scan.modules.size(); ++i) {
    Module& m = scan.modules[i];
    const bool executable = i == 0;  // glibc lists the main program first, with name ""
    if (executable) {
      std::error_code ec;
      const auto target = std::filesystem::read_symlink("/proc/self/exe", ec);
      m.path = ec ? std::string("/proc/self/exe") : target.string();
    } else if (m.path.empty() && vdso != 0 && m.contains(vdso - m.base)) {
      m.path = "[vdso]";  // older glibc names the vDSO ""; newer "linux-vdso.so.1"
    }
    m.key = !m.build_id.empty() ? build_id_key(m.build_id)
                                : path_key(m.path, executable ? "/proc/self/exe" : m.path.c_str());
  }
  return scan;
}

std::string hex(const std::vector<unsigned char>& bytes) {
  std::string s;
  s.reserve(bytes.size() * 2);
  for (unsigned char b : bytes) s += fmt::format("{:02x}", b);
  return s;
}

std::string identity(const Module& m) {
  if (m.build_id.empty()) return fmt::format("{} (no build-id; key {:016x})", m.path, m.key);
  return fmt::format("{} (build-id {})", m.path, hex(m.build_id));
}

struct Cache {
  std::mutex mutex;
  bool valid = false;           // guarded by mutex
  Generation generation;        // guarded by mutex
  std::vector<Module> modules;  // guarded by mutex
};

Cache& cache() {
  // Leaked on purpose: code_ref may run from static destructors and from threads still
  // running during exit.
  static Cache* const instance = [] {
    auto* c = new Cache;
    // A fork while another thread holds the mutex would leave the child's copy locked
    // forever; holding it across fork() leaves it consistent in both processes. If
    // registration fails (ENOMEM) only that rare interleaving is unprotected.
    ::pthread_atfork([] { cache().mutex.lock(); }, [] { cache().mutex.unlock(); },
                     [] { cache().mutex.unlock(); });
    return c;
  }();
  return *instance;
}

/// Runs f(modules) on an up-to-date module table, under the cache's lock.
template <class F>
auto with_modules(F&& f) {
  // Checked on every call, not only after a miss: after a dlclose, a stale table would
  // give an address that now belongs to another library the unloaded one's key.
  const Generation now = current_generation();
  Cache& c = cache();
  std::lock_guard lock(c.mutex);
  if (!c.valid || !now.known || now != c.generation) {
    Scan scan = scan_modules();
    c.modules = std::move(scan.modules);
    c.generation = scan.generation;
    c.valid = true;
  }
  return f(static_cast<const std::vector<Module>&>(c.modules));
}

}  // namespace

CodeRef code_ref(const void* address) {
  const auto a = reinterpret_cast<std::uintptr_t>(address);
  return with_modules([&](const std::vector<Module>& modules) {
    // Segments of different modules never overlap, so at most one contains the address.
    for (const Module& m : modules)
      if (m.contains(a - m.base)) return CodeRef{m.key, a - m.base};
    throw std::invalid_argument(fmt::format(
        "code_ref: address {} is not inside any loaded module (executable or shared library); "
        "heap, stack and mapped memory cannot be sent as a code reference",
        address));
  });
}

const void* code_address(const CodeRef& ref) {
  return with_modules([&](const std::vector<Module>& modules) {
    // Load order makes the choice deterministic when a file is loaded twice under two
    // paths (same build-id, same key): both copies hold the same code at the same
    // offsets, but static data refers to the first copy's objects.
    for (const Module& m : modules) {
      if (m.key != ref.module) continue;
      if (!m.contains(ref.offset))
        throw SerializationError(fmt::format(
            "code_address: offset {:#x} lies outside the loaded segments of {} (key {:016x})",
            ref.offset, m.path, m.key));
      return reinterpret_cast<const void*>(m.base + ref.offset);
    }
    throw SerializationError(fmt::format(
        "code_address: no loaded module has key {:016x}; the sender runs a different "
        "executable or shared library than this process, which runs {}",
        ref.module, identity(modules.front())));
  });
}

std::uint64_t executable_key() {
  return with_modules([](const std::vector<Module>& modules) { return modules.front().key; });
}

std::string executable_identity() {
  return with_modules(
      [](const std::vector<Module>& modules) { return identity(modules.front()); });
}

}  // namespace mproc::detail
