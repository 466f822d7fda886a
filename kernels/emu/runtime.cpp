// Host emulator runtime: runs a CUDA grid on the CPU, one block at a time, every CUDA thread of the
// block a fiber on the calling OS thread. A fiber runs until its next synchronisation point, then
// yields to the block scheduler; the last participant to arrive releases the group. Misuse that
// would hang or be undefined on a GPU (deadlock, divergent barriers, barrier after exit, a shuffle
// reading a non-participating lane, __trap) fails the launch with a message naming the kernel and
// the thread coordinates.
#include "shim.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdlib>
#include <mutex>
#include <string>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define EMU_ASAN 1
#endif

#if !defined(__x86_64__) || defined(EMU_USE_UCONTEXT)
#include <ucontext.h>
#define EMU_UCONTEXT 1
#endif

__thread uint3 threadIdx __attribute__((tls_model("initial-exec")));
__thread uint3 blockIdx __attribute__((tls_model("initial-exec")));
__thread uint3 blockDim __attribute__((tls_model("initial-exec")));
__thread uint3 gridDim __attribute__((tls_model("initial-exec")));

// Bounds of the static __shared__ section (provided by the linker; null when no kernel uses it).
extern "C" char __start_emu_shared[] __attribute__((weak));
extern "C" char __stop_emu_shared[] __attribute__((weak));

namespace emu {
namespace {

constexpr std::size_t kStackBytes = 256 * 1024;  // register arrays and debug/ASan frames live here
constexpr std::size_t kGuardBytes = 4096;

enum class State { Runnable, AtBarrier, AtWarp, Done };

struct Fiber {
  void* sp = nullptr;  // saved stack pointer (hand-written switch)
#ifdef EMU_UCONTEXT
  ucontext_t uc;
#endif
  char* stack = nullptr;  // usable stack bottom (guard page below it)
  uint3 tid{};
  int linear = 0;
  State state = State::Runnable;
  const char* file = nullptr;  // where it waits
  int line = 0;
  // warp collective deposit
  WarpOp op = WarpOp::Sync;
  unsigned mask = 0;
  unsigned long long value = 0, result = 0;
  int arg = 0, width = 32;
};

struct Launch {
  const char* name = nullptr;
  BodyFn body = nullptr;
  void* ctx = nullptr;
  Fiber* fibers = nullptr;
  int n = 0;
  int current = -1;
  void* sched_sp = nullptr;
#ifdef EMU_UCONTEXT
  ucontext_t sched_uc;
#endif
#ifdef EMU_ASAN
  const void* sched_stack_bottom = nullptr;
  std::size_t sched_stack_size = 0;
#endif
  int barrier_arrived = 0, barrier_count = 0, exited = 0, first_exited = -1;
  const char* barrier_file = nullptr;
  int barrier_line = 0, barrier_first = -1;
  struct Warp {
    unsigned arrived = 0, mask = 0;
    WarpOp op = WarpOp::Sync;
    int first = -1;
  } warps[32];
  unsigned warp_exited[32] = {};  // lanes of each warp that have returned
  unsigned char* dyn_smem = nullptr;
  std::string error;
};

thread_local Launch* g_launch = nullptr;
thread_local std::string g_last_error;
thread_local int g_schedule = 0;  // 0 forward, 1 reverse, 2 seeded random
thread_local unsigned long long g_seed = 0x9e3779b97f4a7c15ull;
std::mutex g_launch_mutex;          // static shared memory is process-global: one launch at a time
std::vector<char*> g_stack_pool;    // usable stack bottoms, guarded, reused across launches

std::string coords(uint3 v) {
  return "(" + std::to_string(v.x) + "," + std::to_string(v.y) + "," + std::to_string(v.z) + ")";
}
std::string thread_name(const Launch& L, int i) {
  return "thread " + coords(L.fibers[i].tid) + " of block " + coords(blockIdx);
}
std::string site(const char* file, int line) { return std::string(file) + ":" + std::to_string(line); }
const char* op_name(WarpOp op) {
  switch (op) {
    case WarpOp::Sync: return "__syncwarp";
    case WarpOp::ShflIdx: return "__shfl_sync";
    case WarpOp::ShflUp: return "__shfl_up_sync";
    case WarpOp::ShflDown: return "__shfl_down_sync";
    case WarpOp::ShflXor: return "__shfl_xor_sync";
    case WarpOp::Ballot: return "__ballot_sync";
    case WarpOp::Any: return "__any_sync";
    case WarpOp::All: return "__all_sync";
  }
  return "?";
}

}  // namespace
}  // namespace emu

// ---- context switch ---------------------------------------------------------------------------
extern "C" [[noreturn]] void emu_fiber_main(emu::Fiber* f);

#ifndef EMU_UCONTEXT
// void emu_ctx_switch(void** save_sp, void* load_sp): callee-saved registers on the old stack.
// A new fiber's stack holds six zero registers (r12 = the Fiber*) and then emu_fiber_entry.
extern "C" void emu_ctx_switch(void** save_sp, void* load_sp);
extern "C" void emu_fiber_entry();
asm(R"(
  .text
  .p2align 4
  .globl emu_ctx_switch
  .hidden emu_ctx_switch
  .type emu_ctx_switch,@function
emu_ctx_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size emu_ctx_switch, .-emu_ctx_switch
  .p2align 4
  .globl emu_fiber_entry
  .hidden emu_fiber_entry
  .type emu_fiber_entry,@function
emu_fiber_entry:
  movq %r12, %rdi
  call emu_fiber_main
  ud2
  .size emu_fiber_entry, .-emu_fiber_entry
)");
#endif

namespace emu {
namespace {

void init_fiber_stack(Fiber& f) {
#ifdef EMU_ASAN
  // Frames of a fiber that never returned (finished or abandoned) leave red zones in the shadow.
  __asan_unpoison_memory_region(f.stack, kStackBytes);
#endif
#ifdef EMU_UCONTEXT
  getcontext(&f.uc);
  f.uc.uc_stack.ss_sp = f.stack;
  f.uc.uc_stack.ss_size = kStackBytes;
  f.uc.uc_link = nullptr;
  const auto p = reinterpret_cast<std::uintptr_t>(&f);
  makecontext(&f.uc, reinterpret_cast<void (*)()>(+[](unsigned hi, unsigned lo) {
                emu_fiber_main(reinterpret_cast<Fiber*>((std::uintptr_t(hi) << 32) | lo));
              }),
              2, unsigned(p >> 32), unsigned(p));
#else
  auto* top = reinterpret_cast<std::uintptr_t*>(f.stack + kStackBytes);  // 16-byte aligned
  top[-1] = reinterpret_cast<std::uintptr_t>(&emu_fiber_entry);       // `ret` target, rsp%16==0
  for (int r = 2; r <= 7; ++r) top[-r] = 0;                            // rbp rbx r12 r13 r14 r15
  top[-4] = reinterpret_cast<std::uintptr_t>(&f);                      // r12 slot
  f.sp = top - 7;
#endif
}

// Scheduler -> fiber i, returns when the fiber yields or finishes.
void resume(Launch& L, int i) {
  Fiber& f = L.fibers[i];
  L.current = i;
  threadIdx = f.tid;
#ifdef EMU_ASAN
  void* fake = nullptr;
  __sanitizer_start_switch_fiber(&fake, f.stack, kStackBytes);
#endif
#ifdef EMU_UCONTEXT
  swapcontext(&L.sched_uc, &f.uc);
#else
  emu_ctx_switch(&L.sched_sp, f.sp);
#endif
#ifdef EMU_ASAN
  __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
}

// Fiber -> scheduler. `dying`: the fiber never runs again (its fake stack can be dropped).
void yield_to_scheduler(Launch& L, bool dying) {
  Fiber& f = L.fibers[L.current];
#ifdef EMU_ASAN
  void* fake = nullptr;
  __sanitizer_start_switch_fiber(dying ? nullptr : &fake, L.sched_stack_bottom, L.sched_stack_size);
#else
  (void)dying;
#endif
#ifdef EMU_UCONTEXT
  swapcontext(&f.uc, &L.sched_uc);
#else
  emu_ctx_switch(&f.sp, L.sched_sp);
#endif
#ifdef EMU_ASAN
  __sanitizer_finish_switch_fiber(fake, &L.sched_stack_bottom, &L.sched_stack_size);
#endif
}

// Records the first error of the launch and parks the calling fiber for good.
[[noreturn]] void fail(Launch& L, const std::string& what) {
  if (L.error.empty()) L.error = what;
  L.fibers[L.current].state = State::Done;
  yield_to_scheduler(L, true);
  __builtin_unreachable();
}

Launch& current_launch() {
  if (g_launch == nullptr) {
    std::fprintf(stderr, "emu: CUDA intrinsic called outside a kernel launch\n");
    std::abort();
  }
  return *g_launch;
}

char* take_stack() {
  if (!g_stack_pool.empty()) {
    char* s = g_stack_pool.back();
    g_stack_pool.pop_back();
    return s;
  }
  void* m = mmap(nullptr, kStackBytes + kGuardBytes, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (m == MAP_FAILED) return nullptr;
  mprotect(m, kGuardBytes, PROT_NONE);  // overflow faults instead of corrupting a neighbour
  return static_cast<char*>(m) + kGuardBytes;
}

std::string validate(Dim3 grid, Dim3 block, unsigned smem) {
  const unsigned long long threads = 1ull * block.x * block.y * block.z;
  if (block.x == 0 || block.y == 0 || block.z == 0 || grid.x == 0 || grid.y == 0 || grid.z == 0)
    return "grid and block dimensions must be >= 1";
  if (block.x > 1024 || block.y > 1024 || block.z > 64 || threads > 1024)
    return "block " + coords({block.x, block.y, block.z}) + " exceeds 1024 threads (x,y <= 1024, z <= 64)";
  if (grid.x > 0x7fffffffu || grid.y > 65535 || grid.z > 65535)
    return "grid " + coords({grid.x, grid.y, grid.z}) + " exceeds (2^31-1, 65535, 65535)";
  if (smem > 227u * 1024u) return "dynamic shared memory " + std::to_string(smem) + " B exceeds 227 KiB";
  return {};
}

// Fills the static __shared__ section with 0xFF. Under ASan the section holds red zones between the
// arrays (-fsanitize-sections), so the fill must bypass instrumentation and the memset interceptor.
#ifdef EMU_ASAN
__attribute__((no_sanitize_address, noinline)) void poison_static_shared() {
  if (__start_emu_shared == nullptr || __stop_emu_shared == nullptr) return;
  for (volatile char* p = __start_emu_shared; p < __stop_emu_shared; ++p) *p = char(0xff);
}
#else
void poison_static_shared() {
  if (__start_emu_shared != nullptr && __stop_emu_shared != nullptr)
    std::memset(__start_emu_shared, 0xff, std::size_t(__stop_emu_shared - __start_emu_shared));
}
#endif

// Runs every fiber of the current block to completion; returns false on error.
bool run_block(Launch& L, std::vector<int>& order) {
  const int n = L.n;
  for (int i = 0; i < n; ++i) {
    Fiber& f = L.fibers[i];
    f.state = State::Runnable;
    init_fiber_stack(f);
  }
  L.barrier_arrived = L.barrier_count = L.exited = 0;
  L.first_exited = -1;
  for (auto& w : L.warps) w = Launch::Warp{};
  for (auto& e : L.warp_exited) e = 0;
  int done = 0;
  while (true) {
    if (g_schedule == 2) {  // a fresh seeded permutation every pass (xorshift64*)
      for (int i = n - 1; i > 0; --i) {
        g_seed ^= g_seed >> 12, g_seed ^= g_seed << 25, g_seed ^= g_seed >> 27;
        const int j = int((g_seed * 0x2545f4914f6cdd1dull >> 33) % unsigned(i + 1));
        std::swap(order[i], order[j]);
      }
    }
    bool progress = false;
    for (int k = 0; k < n; ++k) {
      const int i = order[k];
      if (L.fibers[i].state != State::Runnable) continue;
      resume(L, i);
      progress = true;
      if (!L.error.empty()) return false;
      if (L.fibers[i].state == State::Done) ++done;
    }
    if (done == n) return true;
    if (!progress) {
      std::string msg = "deadlock: no thread of block " + coords(blockIdx) + " can proceed;";
      int shown = 0;
      for (int i = 0; i < n && shown < 4; ++i) {
        const Fiber& f = L.fibers[i];
        if (f.state == State::Done) continue;
        msg += " thread " + coords(f.tid) + " waits at " +
               (f.state == State::AtBarrier ? std::string("__syncthreads") : std::string(op_name(f.op))) +
               " " + site(f.file, f.line) + ";";
        ++shown;
      }
      L.error = msg;
      return false;
    }
  }
}

}  // namespace

// ---- intrinsics called from kernels ---------------------------------------------------------------
int block_barrier(int predicate, const char* file, int line) {
  Launch& L = current_launch();
  Fiber& f = L.fibers[L.current];
  if (L.exited > 0)
    fail(L, "__syncthreads at " + site(file, line) + " reached by " + thread_name(L, L.current) +
                " after " + std::to_string(L.exited) + " thread(s) of the block exited (first: thread " +
                coords(L.fibers[L.first_exited].tid) + ")");
  if (L.barrier_arrived == 0) {
    L.barrier_file = file, L.barrier_line = line, L.barrier_first = L.current;
  } else if (L.barrier_line != line || std::strcmp(L.barrier_file, file) != 0) {
    fail(L, "divergent __syncthreads: " + thread_name(L, L.current) + " waits at " + site(file, line) +
                " while thread " + coords(L.fibers[L.barrier_first].tid) + " waits at " +
                site(L.barrier_file, L.barrier_line));
  }
  L.barrier_count += predicate;
  if (++L.barrier_arrived == L.n) {  // last arriver releases everyone
    const int count = L.barrier_count;
    L.barrier_arrived = L.barrier_count = 0;
    for (int i = 0; i < L.n; ++i) {
      Fiber& g = L.fibers[i];
      if (g.state == State::AtBarrier) g.state = State::Runnable, g.result = unsigned(count);
    }
    return count;
  }
  f.state = State::AtBarrier, f.file = file, f.line = line;
  yield_to_scheduler(L, false);
  return int(f.result);
}

unsigned long long warp_collective(WarpOp op, unsigned mask, unsigned long long value, int arg,
                                   int width, const char* file, int line) {
  Launch& L = current_launch();
  const int me = L.current, warp = me / 32, lane = me % 32, base = warp * 32;
  Fiber& f = L.fibers[me];
  const int lanes_in_warp = L.n - base < 32 ? L.n - base : 32;
  const unsigned existing = lanes_in_warp == 32 ? 0xffffffffu : ((1u << lanes_in_warp) - 1u);
  auto where = [&] { return std::string(op_name(op)) + " at " + site(file, line); };  // errors only
  if (!(mask >> lane & 1u))
    fail(L, where() + ": " + thread_name(L, me) + " (lane " + std::to_string(lane) + ") is not in its mask");
  if (mask & ~existing)
    fail(L, where() + ": mask names lanes that do not exist in the block (" + thread_name(L, me) + ")");
  if (width < 1 || width > 32 || (width & (width - 1)) != 0)
    fail(L, where() + ": width " + std::to_string(width) + " is not a power of two <= 32");
  Launch::Warp& w = L.warps[warp];
  if (w.arrived == 0) {
    w.mask = mask, w.op = op, w.first = me;
  } else if (w.mask != mask || w.op != op) {
    fail(L, where() + ": " + thread_name(L, me) + " does not match thread " + coords(L.fibers[w.first].tid) +
                " waiting at " + op_name(w.op) + " " + site(L.fibers[w.first].file, L.fibers[w.first].line));
  }
  if (const unsigned gone = mask & L.warp_exited[warp])
    fail(L, where() + ": " + thread_name(L, me) + " waits for lane " + std::to_string(__builtin_ctz(gone)) +
                " which has exited");
  f.op = op, f.mask = mask, f.value = value, f.arg = arg, f.width = width, f.file = file, f.line = line;
  w.arrived |= 1u << lane;
  if (w.arrived != mask) {
    f.state = State::AtWarp;
    yield_to_scheduler(L, false);
    return f.result;
  }
  // Last arriver: every lane's result at once (PTX shfl.sync source-lane rule), then release.
  unsigned ballot = 0;
  for (int l = 0; l < 32; ++l)
    if ((mask >> l & 1u) && L.fibers[base + l].value != 0) ballot |= 1u << l;
  for (int l = 0; l < 32; ++l) {
    if (!(mask >> l & 1u)) continue;
    Fiber& g = L.fibers[base + l];
    const int seg = l & ~(g.width - 1), end = seg + g.width;
    int src = l;
    switch (op) {
      case WarpOp::ShflIdx: src = seg + (g.arg & (g.width - 1)); break;
      case WarpOp::ShflUp: src = l - g.arg >= seg ? l - g.arg : l; break;
      case WarpOp::ShflDown: src = l + g.arg < end ? l + g.arg : l; break;
      case WarpOp::ShflXor: src = (l ^ g.arg) < end ? (l ^ g.arg) : l; break;
      default: break;
    }
    if (src < 0 || src > 31 || !(mask >> src & 1u)) {
      L.current = base + l;  // name the reading lane in the error
      threadIdx = g.tid;
      fail(L, where() + ": thread " + coords(g.tid) + " of block " + coords(blockIdx) + " reads lane " +
                  std::to_string(src) + " which is not in the mask 0x" + [&] {
                    char b[16];
                    std::snprintf(b, sizeof b, "%08x", mask);
                    return std::string(b);
                  }());
    }
    switch (op) {
      case WarpOp::Sync: g.result = 0; break;
      case WarpOp::Ballot: g.result = ballot; break;
      case WarpOp::Any: g.result = ballot != 0; break;
      case WarpOp::All: g.result = ballot == mask; break;
      default: g.result = L.fibers[base + src].value; break;
    }
  }
  for (int l = 0; l < 32; ++l)
    if ((mask >> l & 1u) && l != lane) L.fibers[base + l].state = State::Runnable;
  w = Launch::Warp{};
  return f.result;
}

void trap(const char* file, int line) {
  Launch& L = current_launch();
  fail(L, "__trap() at " + site(file, line) + " in " + thread_name(L, L.current));
}

void* dynamic_shared() { return current_launch().dyn_smem; }

unsigned active_mask() {
  Launch& L = current_launch();
  const int base = L.current / 32 * 32;
  unsigned m = 0;
  for (int l = 0; l < 32 && base + l < L.n; ++l)
    if (L.fibers[base + l].state != State::Done) m |= 1u << l;
  return m;
}

int run_launch(const char* name, Dim3 grid, Dim3 block, unsigned smem, BodyFn body, void* ctx) {
  std::lock_guard<std::mutex> lock(g_launch_mutex);
  g_last_error.clear();
  if (std::string bad = validate(grid, block, smem); !bad.empty()) {
    g_last_error = std::string("kernel `") + name + "`: invalid launch: " + bad;
    return 1;
  }
  const int n = int(block.x * block.y * block.z);
  std::vector<Fiber> fibers(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) {
    Fiber& f = fibers[std::size_t(i)];
    f.stack = take_stack();
    if (f.stack == nullptr) {
      for (int j = 0; j < i; ++j) g_stack_pool.push_back(fibers[std::size_t(j)].stack);
      g_last_error = std::string("kernel `") + name + "`: cannot map fiber stacks";
      return 1;
    }
    f.linear = i;
    f.tid = {unsigned(i) % block.x, unsigned(i) / block.x % block.y, unsigned(i) / (block.x * block.y)};
  }
  // Dynamic shared buffer (malloc: 16-byte aligned). Under ASan exact-size so overflows are reported;
  // otherwise followed by a 256-byte poisoned red zone so overflowing reads give NaN.
#ifdef EMU_ASAN
  const std::size_t dyn_bytes = smem;
#else
  const std::size_t dyn_bytes = smem ? smem + 256u : 0u;
#endif
  unsigned char* dyn = dyn_bytes ? static_cast<unsigned char*>(std::malloc(dyn_bytes)) : nullptr;
  Launch L;
  L.name = name, L.body = body, L.ctx = ctx, L.fibers = fibers.data(), L.n = n, L.dyn_smem = dyn;
  std::vector<int> order(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) order[std::size_t(i)] = g_schedule == 1 ? n - 1 - i : i;
  g_launch = &L;
  blockDim = {block.x, block.y, block.z};
  gridDim = {grid.x, grid.y, grid.z};
  bool ok = true;
  for (unsigned bz = 0; ok && bz < grid.z; ++bz)
    for (unsigned by = 0; ok && by < grid.y; ++by)
      for (unsigned bx = 0; ok && bx < grid.x; ++bx) {
        blockIdx = {bx, by, bz};
        // Poison: uninitialised shared reads give NaN / garbage instead of silently passing.
        poison_static_shared();
        if (dyn) std::memset(dyn, 0xff, dyn_bytes);
        ok = run_block(L, order);
      }
  g_launch = nullptr;
  for (auto& f : fibers) g_stack_pool.push_back(f.stack);
  std::free(dyn);
  if (!ok) {
    g_last_error = std::string("kernel `") + name + "`: " + L.error;
    return 1;
  }
  return 0;
}

}  // namespace emu

extern "C" [[noreturn]] void emu_fiber_main(emu::Fiber* f) {
  emu::Launch& L = *emu::g_launch;
#ifdef EMU_ASAN
  __sanitizer_finish_switch_fiber(nullptr, &L.sched_stack_bottom, &L.sched_stack_size);
#endif
  L.body(L.ctx);
  // A thread leaving while others wait at a barrier or for it in a warp collective is an error.
  if (L.barrier_arrived > 0)
    emu::fail(L, emu::thread_name(L, f->linear) + " exited while thread " +
                     emu::coords(L.fibers[L.barrier_first].tid) + " waits at __syncthreads " +
                     emu::site(L.barrier_file, L.barrier_line));
  const auto& w = L.warps[f->linear / 32];
  if (w.arrived != 0 && (w.mask >> (f->linear % 32) & 1u))
    emu::fail(L, emu::thread_name(L, f->linear) + " exited while thread " +
                     emu::coords(L.fibers[w.first].tid) + " waits for it at " + emu::op_name(w.op) + " " +
                     emu::site(L.fibers[w.first].file, L.fibers[w.first].line));
  if (L.exited++ == 0) L.first_exited = f->linear;
  L.warp_exited[f->linear / 32] |= 1u << (f->linear % 32);
  f->state = emu::State::Done;
  emu::yield_to_scheduler(L, true);
  __builtin_unreachable();
}

// ---- C API used by src/device/emulated.rs ------------------------------------------------------------
extern "C" const char* emu_last_error() { return emu::g_last_error.c_str(); }
// Scheduling order of the calling OS thread's launches: 0 forward, 1 reverse, 2 seeded random.
extern "C" void emu_set_schedule(int mode, unsigned long long seed) {
  emu::g_schedule = mode;
  emu::g_seed = seed ? seed : 0x9e3779b97f4a7c15ull;
}
extern "C" unsigned long long emu_shared_section_bytes() {
  return __start_emu_shared ? (unsigned long long)(__stop_emu_shared - __start_emu_shared) : 0;
}
