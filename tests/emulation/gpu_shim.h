// CPU stand-in for the parts of the Metal Shading Language and of CUDA C++ that pbmlx's kernel
// bodies use, so that the exact source MLX generates for a kernel compiles as C++20 (clang++)
// and runs on the CPU over the same grid and threadgroup shape as on the GPU.
//
// Execution model (pbemu::launch): threadgroups (CUDA blocks) run one after another; inside a
// group, when the kernel synchronises (threadgroup_barrier / __syncthreads), every thread of
// the group is a real std::thread meeting at a std::barrier, so shared-memory reductions run
// as they would on the GPU. `threadgroup` / `__shared__` variables become function-local
// statics: one instance, used by the single group that runs at a time.
// Metal launches only the threads inside the grid (non-uniform threadgroups: the last group
// of a row may be smaller); CUDA launches whole blocks (ceil(grid / block) of them), as MLX
// does on each backend, so a body must guard its bounds on CUDA.
#pragma once
#include <algorithm>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <thread>
#include <vector>

namespace pbemu {

// IEEE binary16 storage with float arithmetic (loads widen, stores round to nearest even): what
// the kernels do with half data. A struct, since __fp16 cannot be a parameter or return type.
struct half16 {
  __fp16 v;
  half16() = default;
  half16(float f) : v(static_cast<__fp16>(f)) {}
  operator float() const { return static_cast<float>(v); }
};
static_assert(sizeof(half16) == 2, "half must be 2 bytes");

struct dim3v {
  unsigned x = 0, y = 0, z = 0;
};

struct ThreadCtx {
  dim3v pos_in_grid, pos_in_group, group_pos, group_size, grid_size, group_count;
  unsigned index_in_group = 0;
};

inline thread_local const ThreadCtx* tls_ctx = nullptr;
inline thread_local std::barrier<>* tls_barrier = nullptr;

inline void sync_group() {
  if (tls_barrier) tls_barrier->arrive_and_wait();
}

// Runs fn for every thread. `uniform` (CUDA): whole groups; otherwise (Metal): in-grid only.
inline void launch(dim3v grid, dim3v group, bool threaded, bool uniform,
                   const std::function<void(const ThreadCtx&)>& fn) {
  dim3v count{(grid.x + group.x - 1) / group.x, (grid.y + group.y - 1) / group.y,
              (grid.z + group.z - 1) / group.z};
  for (unsigned gz = 0; gz < count.z; ++gz)
    for (unsigned gy = 0; gy < count.y; ++gy)
      for (unsigned gx = 0; gx < count.x; ++gx) {
        std::vector<ThreadCtx> threads;
        for (unsigned tz = 0; tz < group.z; ++tz)
          for (unsigned ty = 0; ty < group.y; ++ty)
            for (unsigned tx = 0; tx < group.x; ++tx) {
              ThreadCtx c;
              c.group_pos = {gx, gy, gz};
              c.pos_in_group = {tx, ty, tz};
              c.pos_in_grid = {gx * group.x + tx, gy * group.y + ty, gz * group.z + tz};
              c.grid_size = grid;
              c.group_count = count;
              c.index_in_group = tx + group.x * (ty + group.y * tz);
              if (!uniform && (c.pos_in_grid.x >= grid.x || c.pos_in_grid.y >= grid.y ||
                               c.pos_in_grid.z >= grid.z))
                continue;
              threads.push_back(c);
            }
        // Metal's threads_per_threadgroup: this group's extent (smaller at the grid's edge).
        dim3v actual{0, 0, 0};
        for (auto& c : threads) {
          actual.x = std::max(actual.x, c.pos_in_group.x + 1);
          actual.y = std::max(actual.y, c.pos_in_group.y + 1);
          actual.z = std::max(actual.z, c.pos_in_group.z + 1);
        }
        for (auto& c : threads) c.group_size = uniform ? group : actual;
        if (!threaded) {
          for (auto& c : threads) {
            tls_ctx = &c;
            fn(c);
          }
          tls_ctx = nullptr;
          continue;
        }
        std::barrier<> bar(static_cast<std::ptrdiff_t>(threads.size()));
        std::vector<std::thread> pool;
        pool.reserve(threads.size());
        for (auto& c : threads)
          pool.emplace_back([&bar, &fn, &c] {
            tls_barrier = &bar;
            tls_ctx = &c;
            fn(c);
            tls_barrier = nullptr;
            tls_ctx = nullptr;
          });
        for (auto& t : pool) t.join();
      }
}

}  // namespace pbemu

#ifdef PBEMU_METAL
// ---- Metal -----------------------------------------------------------------------------------
#define kernel
#define device
#define constant
#define thread
#define threadgroup static
typedef unsigned int uint;
typedef unsigned short ushort;
typedef unsigned char uchar;
typedef pbemu::half16 half;
typedef pbemu::half16 float16_t;

struct uint3 {
  uint x, y, z;
  uint3() : x(0), y(0), z(0) {}
  uint3(uint a, uint b, uint c) : x(a), y(b), z(c) {}
  uint3(pbemu::dim3v v) : x(v.x), y(v.y), z(v.z) {}
};
struct uint2 {
  uint x, y;
  uint2() : x(0), y(0) {}
  uint2(uint a, uint b) : x(a), y(b) {}
  uint2(pbemu::dim3v v) : x(v.x), y(v.y) {}
};

enum class mem_flags { mem_none = 0, mem_device = 1, mem_threadgroup = 2 };
inline void threadgroup_barrier(mem_flags) { pbemu::sync_group(); }

namespace metal {
using std::abs;
using std::ceil;
using std::exp;
using std::exp2;
using std::floor;
using std::fma;
using std::log;
using std::log2;
using std::pow;
using std::rint;
using std::round;
using std::sqrt;
template <typename T>
inline T min(T a, T b) { return std::min(a, b); }
template <typename T>
inline T max(T a, T b) { return std::max(a, b); }
// Metal's clamp: min(max(x, lo), hi).
template <typename T>
inline T clamp(T x, T lo, T hi) { return std::min(std::max(x, lo), hi); }
inline float rsqrt(float x) { return 1.0f / std::sqrt(x); }
inline float powr(float x, float y) { return std::pow(x, y); }
template <typename T>
inline T select(T a, T b, bool c) { return c ? b : a; }
inline float precise_divide(float a, float b) { return a / b; }
}  // namespace metal
#endif  // PBEMU_METAL

#ifdef PBEMU_CUDA
// ---- CUDA ------------------------------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define __grid_constant__
#define __restrict__
typedef pbemu::half16 __half;

struct PbDim3 {
  unsigned x, y, z;
};
#define threadIdx (PbDim3{pbemu::tls_ctx->pos_in_group.x, pbemu::tls_ctx->pos_in_group.y, pbemu::tls_ctx->pos_in_group.z})
#define blockIdx (PbDim3{pbemu::tls_ctx->group_pos.x, pbemu::tls_ctx->group_pos.y, pbemu::tls_ctx->group_pos.z})
#define blockDim (PbDim3{pbemu::tls_ctx->group_size.x, pbemu::tls_ctx->group_size.y, pbemu::tls_ctx->group_size.z})
#define gridDim (PbDim3{pbemu::tls_ctx->group_count.x, pbemu::tls_ctx->group_count.y, pbemu::tls_ctx->group_count.z})
inline void __syncthreads() { pbemu::sync_group(); }
inline float __expf(float x) { return std::exp(x); }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline float __half2float(__half h) { return static_cast<float>(h); }
inline __half __float2half(float f) { return static_cast<__half>(f); }
using std::exp;  // expf, powf, fminf, ... are the C library's (<cmath> declares them globally)

namespace cooperative_groups {
struct grid_group {
  unsigned long long thread_rank() const {
    const auto& c = *pbemu::tls_ctx;
    unsigned long long bx = c.group_size.x, by = c.group_size.y;
    unsigned long long block =
        c.group_pos.x + c.group_count.x * (c.group_pos.y + 1ull * c.group_count.y * c.group_pos.z);
    return block * bx * by * c.group_size.z + c.index_in_group;
  }
};
inline grid_group this_grid() { return {}; }
struct thread_block {
  unsigned thread_rank() const { return pbemu::tls_ctx->index_in_group; }
  void sync() const { pbemu::sync_group(); }
};
inline thread_block this_thread_block() { return {}; }
}  // namespace cooperative_groups
#endif  // PBEMU_CUDA

// ---- __fp16 conversions on x86 ---------------------------------------------------------------
// clang lowers __fp16 <-> float on x86 without F16C to calls of these compiler-rt helpers, which
// libgcc does not provide, so a kernel touching half failed at dlopen ("undefined symbol
// __gnu_f2h_ieee"). Weak definitions (IEEE binary16, round to nearest even, NaN kept quiet) stand
// in; where the runtime library has them, its copies win.
extern "C" __attribute__((weak)) unsigned short __gnu_f2h_ieee(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000u, ax = x & 0x7fffffffu;
  if (ax > 0x7f800000u)  // NaN: quiet, payload's top bits kept
    return static_cast<unsigned short>(sign | 0x7e00u | ((ax >> 13) & 0x3ffu));
  if (ax >= 0x477ff000u) return static_cast<unsigned short>(sign | 0x7c00u);  // >= 65520: inf
  if (ax < 0x38800000u) {  // below 2^-14: a subnormal half, in units of 2^-24 (exact scaling)
    float a;
    std::memcpy(&a, &ax, 4);
    const uint32_t m = static_cast<uint32_t>(std::nearbyint(a * 16777216.0f));  // ties: even
    return static_cast<unsigned short>(sign | m);
  }
  // Normal: drop 13 mantissa bits rounding to nearest even, rebias the exponent (127 -> 15).
  const uint32_t r = (ax + 0xfffu + ((ax >> 13) & 1u)) >> 13;
  return static_cast<unsigned short>(sign | (r - (112u << 10)));
}
extern "C" __attribute__((weak)) float __gnu_h2f_ieee(unsigned short h) {
  const uint32_t sign = (h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
  uint32_t bits;
  if (e == 0) {  // zero or subnormal: m * 2^-24, exact in float
    const float a = static_cast<float>(m) * (1.0f / 16777216.0f);
    std::memcpy(&bits, &a, 4);
    bits |= sign;
  } else if (e == 31) {
    bits = sign | 0x7f800000u | (m << 13);
  } else {
    bits = sign | ((e + 112u) << 23) | (m << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}
