// Host shim: the CUDA subset used by kernels/*.cu, mapped onto C++20 on the CPU.
// Force-included by build.rs (`-include kernels/emu/shim.h -x c++`); NVRTC never sees this file.
// Every CUDA thread of a block is a fiber (see runtime.cpp); the functions below that synchronise
// (__syncthreads, __syncwarp, *_sync) yield to the block scheduler.
#pragma once

// Every std header first: CUDA macros such as __noinline__ would break libstdc++ otherwise.
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <type_traits>
#include <utility>

#define CULTUREMERT_EMU 1

// ---- qualifiers ---------------------------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __constant__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
// Static shared memory: one linker section for every kernel, poisoned (0xFF) before each block.
#define __shared__ static __attribute__((section("emu_shared")))

// ---- vector types ---------------------------------------------------------------------------------
struct uint3 { unsigned x, y, z; };
struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
  constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
};
struct __attribute__((aligned(8))) float2 { float x, y; };
struct float3 { float x, y, z; };
struct __attribute__((aligned(16))) float4 { float x, y, z, w; };
struct __attribute__((aligned(8))) int2 { int x, y; };
struct __attribute__((aligned(16))) int4 { int x, y, z, w; };
struct __attribute__((aligned(8))) uint2 { unsigned x, y; };
struct __attribute__((aligned(16))) uint4 { unsigned x, y, z, w; };
inline float2 make_float2(float x, float y) { return {x, y}; }
inline float3 make_float3(float x, float y, float z) { return {x, y, z}; }
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
inline int2 make_int2(int x, int y) { return {x, y}; }
inline int4 make_int4(int x, int y, int z, int w) { return {x, y, z, w}; }
inline uint2 make_uint2(unsigned x, unsigned y) { return {x, y}; }
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }

// ---- built-in indices: thread-locals of the OS thread, rewritten by the scheduler on every resume --
extern __thread uint3 threadIdx __attribute__((tls_model("initial-exec")));
extern __thread uint3 blockIdx __attribute__((tls_model("initial-exec")));
extern __thread uint3 blockDim __attribute__((tls_model("initial-exec")));
extern __thread uint3 gridDim __attribute__((tls_model("initial-exec")));
constexpr int warpSize = 32;

// ---- runtime entry points (runtime.cpp) --------------------------------------------------------
namespace emu {
struct Dim3 { unsigned x, y, z; };
enum class WarpOp : int { Sync, ShflIdx, ShflUp, ShflDown, ShflXor, Ballot, Any, All };
// Block barrier; returns the number of threads whose predicate was non-zero.
int block_barrier(int predicate, const char* file, int line);
// Warp collective: deposits `value`, waits for every lane of `mask`, returns this lane's result.
unsigned long long warp_collective(WarpOp op, unsigned mask, unsigned long long value, int arg,
                                   int width, const char* file, int line);
[[noreturn]] void trap(const char* file, int line);
void* dynamic_shared();
unsigned active_mask();
using BodyFn = void (*)(void*);
int run_launch(const char* name, Dim3 grid, Dim3 block, unsigned smem, BodyFn body, void* ctx);

template <class T>
unsigned long long to_bits(T v) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>);
  unsigned long long b = 0;
  std::memcpy(&b, &v, sizeof(T));
  return b;
}
template <class T>
T from_bits(unsigned long long b) {
  T v;
  std::memcpy(&v, &b, sizeof(T));
  return v;
}

// Unpacks cuLaunchKernel's `void** params` into the kernel's typed signature.
template <class... A, std::size_t... I>
void invoke(void (*fn)(A...), void** params, std::index_sequence<I...>) {
  fn(*static_cast<std::remove_reference_t<A>*>(params[I])...);
}
template <class... A>
int launch_kernel(const char* name, void (*fn)(A...), Dim3 grid, Dim3 block, unsigned smem,
                  void** params) {
  struct Ctx {
    void (*fn)(A...);
    void** params;
  } ctx{fn, params};
  return run_launch(
      name, grid, block, smem,
      [](void* p) {
        auto* c = static_cast<Ctx*>(p);
        invoke(c->fn, c->params, std::index_sequence_for<A...>{});
      },
      &ctx);
}
}  // namespace emu

// One line after each kernel: `EMU_EXPORT(name)` (empty under NVRTC, see common.cuh).
#define EMU_EXPORT(name)                                                                    \
  extern "C" int emu_##name(::emu::Dim3 grid, ::emu::Dim3 block, unsigned smem,             \
                            void** params) {                                                \
    return ::emu::launch_kernel(#name, &name, grid, block, smem, params);                   \
  }

// Dynamic shared memory: an exact-size per-launch buffer on the host.
#define DYNAMIC_SHARED(T, name) T* name = static_cast<T*>(::emu::dynamic_shared())

// ---- synchronisation ----------------------------------------------------------------------------
#define __syncthreads() ((void)::emu::block_barrier(1, __FILE__, __LINE__))
#define __syncthreads_count(p) (::emu::block_barrier((p) != 0, __FILE__, __LINE__))
#define __syncthreads_and(p) \
  (::emu::block_barrier((p) != 0, __FILE__, __LINE__) == (int)(blockDim.x * blockDim.y * blockDim.z))
#define __syncthreads_or(p) (::emu::block_barrier((p) != 0, __FILE__, __LINE__) != 0)
#define __syncwarp(...) ::emu::syncwarp_at(__FILE__, __LINE__ __VA_OPT__(, ) __VA_ARGS__)
#define __trap() ::emu::trap(__FILE__, __LINE__)
#define __threadfence() ((void)0)
#define __threadfence_block() ((void)0)
#define __activemask() ::emu::active_mask()

namespace emu {
inline void syncwarp_at(const char* file, int line, unsigned mask = 0xffffffffu) {
  warp_collective(WarpOp::Sync, mask, 0, 0, 32, file, line);
}
template <class T>
T shfl(WarpOp op, unsigned mask, T v, int arg, int width, const char* file, int line) {
  return from_bits<T>(warp_collective(op, mask, to_bits(v), arg, width, file, line));
}
}  // namespace emu

#define __shfl_sync(mask, v, lane, ...) \
  ::emu::shfl(::emu::WarpOp::ShflIdx, mask, v, lane, EMU_WIDTH(__VA_ARGS__), __FILE__, __LINE__)
#define __shfl_up_sync(mask, v, d, ...) \
  ::emu::shfl(::emu::WarpOp::ShflUp, mask, v, d, EMU_WIDTH(__VA_ARGS__), __FILE__, __LINE__)
#define __shfl_down_sync(mask, v, d, ...) \
  ::emu::shfl(::emu::WarpOp::ShflDown, mask, v, d, EMU_WIDTH(__VA_ARGS__), __FILE__, __LINE__)
#define __shfl_xor_sync(mask, v, m, ...) \
  ::emu::shfl(::emu::WarpOp::ShflXor, mask, v, m, EMU_WIDTH(__VA_ARGS__), __FILE__, __LINE__)
#define EMU_WIDTH(...) (32 __VA_OPT__(*0 + (__VA_ARGS__)))
#define __ballot_sync(mask, p) \
  ((unsigned)::emu::warp_collective(::emu::WarpOp::Ballot, mask, (p) != 0, 0, 32, __FILE__, __LINE__))
#define __any_sync(mask, p) \
  ((int)::emu::warp_collective(::emu::WarpOp::Any, mask, (p) != 0, 0, 32, __FILE__, __LINE__))
#define __all_sync(mask, p) \
  ((int)::emu::warp_collective(::emu::WarpOp::All, mask, (p) != 0, 0, 32, __FILE__, __LINE__))

// ---- atomics: one fiber runs at a time and launches are serialised, so plain updates are atomic --
template <class T>
inline T atomicAdd(T* p, T v) { T old = *p; *p = old + v; return old; }
template <class T>
inline T atomicSub(T* p, T v) { T old = *p; *p = old - v; return old; }
template <class T>
inline T atomicMax(T* p, T v) { T old = *p; *p = old > v ? old : v; return old; }
template <class T>
inline T atomicMin(T* p, T v) { T old = *p; *p = old < v ? old : v; return old; }
template <class T>
inline T atomicExch(T* p, T v) { T old = *p; *p = v; return old; }
template <class T>
inline T atomicCAS(T* p, T cmp, T v) { T old = *p; if (old == cmp) *p = v; return old; }
template <class T>
inline T atomicOr(T* p, T v) { T old = *p; *p = old | v; return old; }
template <class T>
inline T atomicAnd(T* p, T v) { T old = *p; *p = old & v; return old; }

// ---- math and bit intrinsics ---------------------------------------------------------------------
// glibc declares __expf & co.: map them with object-like macros, never define them.
#define __expf expf
#define __logf logf
#define __sinf sinf
#define __cosf cosf
#define __powf powf
#define __tanf tanf
#define __exp10f exp10f
#define __log2f log2f
#define __fdividef(a, b) ((a) / (b))
#define __fmaf_rn(a, b, c) fmaf(a, b, c)
#define __fadd_rn(a, b) ((a) + (b))
#define __fmul_rn(a, b) ((a) * (b))
#define __frcp_rn(a) (1.0f / (a))
#define __fsqrt_rn(a) sqrtf(a)
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline float __saturatef(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x); }
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }
inline int __float_as_int(float f) { return std::bit_cast<int>(f); }
inline unsigned __float_as_uint(float f) { return std::bit_cast<unsigned>(f); }
inline float __int_as_float(int i) { return std::bit_cast<float>(i); }
inline float __uint_as_float(unsigned u) { return std::bit_cast<float>(u); }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz((unsigned)x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __mul24(int a, int b) { return a * b; }
template <class T>
inline T __ldg(const T* p) { return *p; }

// ---- __half / __nv_bfloat16: storage types with round-to-nearest-even conversions ------------------
struct __half { unsigned short x; };
struct __nv_bfloat16 { unsigned short x; };
inline float __half2float(__half h) {
  const unsigned sign = (h.x & 0x8000u) << 16, exp = (h.x >> 10) & 0x1f, man = h.x & 0x3ffu;
  unsigned bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (man << 13);
  } else if (exp != 0) {
    bits = sign | ((exp + 112) << 23) | (man << 13);
  } else if (man == 0) {
    bits = sign;
  } else {  // subnormal half: value = man * 2^-24, exact in f32
    const float f = (float)man * 5.9604644775390625e-8f;
    bits = sign | std::bit_cast<unsigned>(f);
  }
  return std::bit_cast<float>(bits);
}
inline __half __float2half(float f) {
  const unsigned u = std::bit_cast<unsigned>(f);
  const unsigned short sign = (unsigned short)((u >> 16) & 0x8000u);
  const unsigned abs = u & 0x7fffffffu;
  if (abs >= 0x7f800000u) return {(unsigned short)(sign | 0x7c00u | (abs > 0x7f800000u ? 0x200u : 0))};
  if (abs >= 0x477ff000u) return {(unsigned short)(sign | 0x7c00u)};  // rounds to >= 65520: inf
  if (abs < 0x38800000u) {  // result is subnormal (or zero): scale so rounding happens in f32 add
    const float a = std::bit_cast<float>(abs) + 0.5f;  // 0.5 = 2^-1: ulp becomes 2^-24
    return {(unsigned short)(sign | (std::bit_cast<unsigned>(a) - 0x3f000000u))};
  }
  const unsigned rounded = abs + 0xfffu + ((abs >> 13) & 1u);  // round to nearest even on 13 bits
  return {(unsigned short)(sign | ((rounded - 0x38000000u) >> 13))};
}
inline float __bfloat162float(__nv_bfloat16 b) { return std::bit_cast<float>((unsigned)b.x << 16); }
inline __nv_bfloat16 __float2bfloat16(float f) {
  const unsigned u = std::bit_cast<unsigned>(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return {(unsigned short)((u >> 16) | 0x40u)};  // quiet NaN
  return {(unsigned short)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16)};
}
