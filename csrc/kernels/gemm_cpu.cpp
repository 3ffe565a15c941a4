// Products against a packed B on the CPU (layout and purpose in gemm.h). Compiled once per
// instruction set (see cpu_isa.h).
//
// The micro-kernel keeps an R x S block of C in registers, S = two vectors of columns (a strip
// of a panel: one strip per panel on AVX-512, two on AVX2), and per k loads the strip's two
// values of B and broadcasts R values of A. Around it the loops keep a block of A (kRowBlock
// rows x kDepthBlock) in L2 while the panels of B stream past, and each panel's kDepthBlock
// rows stay in L2 across the block's micro-rows.
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <type_traits>

#if defined(CPU_CAPABILITY_AVX512)
#include <immintrin.h>
#endif

#include "kernels/gemm.h"

namespace fastcrnn::cpu::FASTCRNN_ISA_NS {
namespace {

// The few vector operations the micro-kernel needs. AVX-512 spells them in intrinsics: GCC keeps
// at::vec's 512-bit wrappers in memory rather than registers once there are more than a few
// (every multiply-add then loads and stores its accumulator), where it keeps raw __m512 values
// in registers. Other instruction sets use at::vec, which GCC keeps in registers.
template <typename scalar_t>
struct Simd {
  using Vec = at::vec::Vectorized<scalar_t>;
  static constexpr int64_t kSize = Vec::size();
  static constexpr bool kWide = false;  // true: 32 vector registers (AVX-512), not 16
  static Vec zero() { return Vec(scalar_t(0)); }
  static Vec broadcast(scalar_t x) { return Vec(x); }
  static Vec load(const scalar_t* p) { return Vec::loadu(p); }
  static Vec load(const scalar_t* p, int n) { return Vec::loadu(p, n); }
  static Vec fmadd(Vec a, Vec b, Vec c) { return at::vec::fmadd(a, b, c); }
  static Vec add(Vec a, Vec b) { return a + b; }
  static void store(scalar_t* p, Vec v) { v.store(p); }
  static void store(scalar_t* p, Vec v, int n) { v.store(p, n); }
};

#if defined(CPU_CAPABILITY_AVX512)
template <>
struct Simd<float> {
  using Vec = __m512;
  static constexpr int64_t kSize = 16;
  static constexpr bool kWide = true;
  static __mmask16 mask(int n) { return static_cast<__mmask16>((1u << n) - 1); }
  static Vec zero() { return _mm512_setzero_ps(); }
  static Vec broadcast(float x) { return _mm512_set1_ps(x); }
  static Vec load(const float* p) { return _mm512_loadu_ps(p); }
  static Vec load(const float* p, int n) { return _mm512_maskz_loadu_ps(mask(n), p); }
  static Vec fmadd(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
  static Vec add(Vec a, Vec b) { return _mm512_add_ps(a, b); }
  static void store(float* p, Vec v) { _mm512_storeu_ps(p, v); }
  static void store(float* p, Vec v, int n) { _mm512_mask_storeu_ps(p, mask(n), v); }
};

template <>
struct Simd<double> {
  using Vec = __m512d;
  static constexpr int64_t kSize = 8;
  static constexpr bool kWide = true;
  static __mmask8 mask(int n) { return static_cast<__mmask8>((1u << n) - 1); }
  static Vec zero() { return _mm512_setzero_pd(); }
  static Vec broadcast(double x) { return _mm512_set1_pd(x); }
  static Vec load(const double* p) { return _mm512_loadu_pd(p); }
  static Vec load(const double* p, int n) { return _mm512_maskz_loadu_pd(mask(n), p); }
  static Vec fmadd(Vec a, Vec b, Vec c) { return _mm512_fmadd_pd(a, b, c); }
  static Vec add(Vec a, Vec b) { return _mm512_add_pd(a, b); }
  static void store(double* p, Vec v) { _mm512_storeu_pd(p, v); }
  static void store(double* p, Vec v, int n) { _mm512_mask_storeu_pd(p, mask(n), v); }
};
#endif

template <typename scalar_t>
constexpr int64_t kPanel = kGemmPanelBytes / static_cast<int64_t>(sizeof(scalar_t));
template <typename scalar_t>
constexpr int64_t kStrip = 2 * Simd<scalar_t>::kSize;

// Rows of C per micro-kernel call: the 2R accumulators take 3/4 of the vector registers (12 of
// AVX2's 16, 24 of AVX-512's 32), which leaves room for B's two vectors and the broadcast.
template <typename scalar_t>
constexpr int kMicroRows = Simd<scalar_t>::kWide ? 12 : 6;

// Depth of a k-block. Deep: each micro-kernel call loads and stores its block of C once per
// k-block, and at this depth the panel's rows (64 KiB of float32) still stream from L2 as fast
// as the multiply-adds consume them, where 16 KiB blocks that stay in L1 cost more in C traffic
// than they save.
constexpr int64_t kDepthBlock = 512;
// Rows of A per block: a kRowBlock x kDepthBlock block of A stays in L2 while every panel of B
// passes it. A multiple of every kMicroRows.
constexpr int64_t kRowBlock = 120;
// How far ahead of the panel row in use the kernel asks for B: a packed B is one sequential
// stream from memory at small M, where nothing else hides its latency.
constexpr int64_t kPrefetchRows = 64;

// C block (R x the strip's cols) = (load_c ? C : 0) + A (R x kc) B (kc x strip) + bias (the
// strip's slice, or null). b: the strip's first column in row 0 of a panel (rows kPanel apart).
template <typename scalar_t, int R, bool kFullStrip>
inline void micro_kernel(int64_t kc, const scalar_t* a, int64_t lda, const scalar_t* b,
                         const scalar_t* bias, scalar_t* c, int64_t ldc, int64_t cols,
                         bool load_c) {
  using S = Simd<scalar_t>;
  using Vec = typename S::Vec;
  constexpr int64_t V = S::kSize, P = kPanel<scalar_t>;
  static_assert(P % kStrip<scalar_t> == 0, "a panel must be whole strips");
  const int n0 = kFullStrip ? static_cast<int>(V) : static_cast<int>(std::min<int64_t>(cols, V));
  const int n1 =
      kFullStrip ? static_cast<int>(V) : static_cast<int>(std::max<int64_t>(cols - V, 0));
  const auto load = [&](const scalar_t* src, int count) {
    return kFullStrip ? S::load(src) : count ? S::load(src, count) : S::zero();
  };
  Vec acc0[R], acc1[R];
  _Pragma("GCC unroll 16") for (int r = 0; r < R; ++r) {
    acc0[r] = load_c ? load(c + r * ldc, n0) : S::zero();
    acc1[r] = load_c ? load(c + r * ldc + V, n1) : S::zero();
  }
  if (bias != nullptr) {
    const Vec add0 = load(bias, n0), add1 = load(bias + V, n1);
    _Pragma("GCC unroll 16") for (int r = 0; r < R; ++r) {
      acc0[r] = S::add(acc0[r], add0);
      acc1[r] = S::add(acc1[r], add1);
    }
  }
  for (int64_t k = 0; k < kc; ++k) {
    // both cache lines of the panel row that far ahead (a strip may start mid-row)
    __builtin_prefetch(b + (k + kPrefetchRows) * P);
    __builtin_prefetch(b + (k + kPrefetchRows) * P + V);
    const Vec b0 = S::load(b + k * P), b1 = S::load(b + k * P + V);
    _Pragma("GCC unroll 16") for (int r = 0; r < R; ++r) {
      const Vec x = S::broadcast(a[r * lda + k]);
      acc0[r] = S::fmadd(x, b0, acc0[r]);
      acc1[r] = S::fmadd(x, b1, acc1[r]);
    }
  }
  _Pragma("GCC unroll 16") for (int r = 0; r < R; ++r) {
    if (kFullStrip) {
      S::store(c + r * ldc, acc0[r]);
      S::store(c + r * ldc + V, acc1[r]);
    } else {
      if (n0) S::store(c + r * ldc, acc0[r], n0);
      if (n1) S::store(c + r * ldc + V, acc1[r], n1);
    }
  }
}

// micro_kernel for `rows` (1..R) rows.
template <typename scalar_t, int R, bool kFullStrip>
inline void micro_kernel_rows(int rows, int64_t kc, const scalar_t* a, int64_t lda,
                              const scalar_t* b, const scalar_t* bias, scalar_t* c, int64_t ldc,
                              int64_t cols, bool load_c) {
  if constexpr (R > 0) {
    if (rows == R)
      return micro_kernel<scalar_t, R, kFullStrip>(kc, a, lda, b, bias, c, ldc, cols, load_c);
    micro_kernel_rows<scalar_t, R - 1, kFullStrip>(rows, kc, a, lda, b, bias, c, ldc, cols, load_c);
  }
}

template <typename scalar_t>
void gemm_packed(const PackedGemmParams& p) {
  constexpr int R = kMicroRows<scalar_t>;
  constexpr int64_t P = kPanel<scalar_t>, S = kStrip<scalar_t>;
  static_assert(kRowBlock % R == 0, "a row block must be whole micro-rows");
  const auto* a = static_cast<const scalar_t*>(p.a);
  const auto* b = static_cast<const scalar_t*>(p.packed_b);
  const auto* bias = static_cast<const scalar_t*>(p.bias);
  auto* c = static_cast<scalar_t*>(p.c);
  const int64_t M = p.M, N = p.N, K = p.K;
  if (p.batch <= 0 || M <= 0 || N <= 0) return;
  const int64_t panels = (N + P - 1) / P;
  const int64_t row_blocks = (M + kRowBlock - 1) / kRowBlock;
  const int64_t b_stride = gemm_packed_size(p.dtype, K, N);
  // An item is one (batch, row block, panel): consecutive items share their block of A.
  const auto run = [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t batch = item / (row_blocks * panels);
      const int64_t rb = item / panels % row_blocks, panel = item % panels;
      const int64_t m_end = std::min(M, (rb + 1) * kRowBlock);
      // the block's rows in equal calls of at most R (64 rows: 11 x 5 + 9, not 12 x 5 + 4): a
      // call of few rows is bound by its loads of B, not by its multiply-adds
      const int64_t calls = (m_end - rb * kRowBlock + R - 1) / R;
      const int64_t rows_per_call = (m_end - rb * kRowBlock + calls - 1) / calls;
      const scalar_t* a_b = a + batch * p.a_batch_stride;
      const scalar_t* panel_b = b + batch * b_stride + panel * K * P;
      // K = 0 still runs one (empty) k-block, which writes 0 or C, plus the bias
      for (int64_t k0 = 0; k0 == 0 || k0 < K; k0 += kDepthBlock) {
        const int64_t kc = std::min(kDepthBlock, K - k0);
        const bool load_c = p.accumulate || k0 > 0;
        for (int64_t n0 = panel * P; n0 < std::min(N, (panel + 1) * P); n0 += S) {
          const int64_t cols = std::min(S, N - n0);
          const scalar_t* strip_b = panel_b + k0 * P + n0 % P;
          const scalar_t* strip_bias = bias != nullptr && k0 == 0 ? bias + n0 : nullptr;
          scalar_t* c_b = c + batch * p.c_batch_stride + n0;
          for (int64_t m = rb * kRowBlock; m < m_end; m += rows_per_call) {
            const int rows = static_cast<int>(std::min<int64_t>(rows_per_call, m_end - m));
            const scalar_t* a_m = a_b + m * p.lda + k0;
            scalar_t* c_m = c_b + m * p.ldc;
            if (p.accumulate && k0 == 0) {
              // the C block the next call accumulates into (the next rows, or the next strip's
              // first rows), asked for now: C written long before (an LSTM's input product
              // over all steps) comes from L3 or memory, and a call's first loads of C would
              // otherwise each wait for it
              const bool next_rows = m + rows_per_call < m_end;
              if (next_rows || n0 + S < N) {
                const scalar_t* next =
                    next_rows ? c_m + rows_per_call * p.ldc : c_b + S + rb * kRowBlock * p.ldc;
                const int64_t next_count =
                    next_rows ? std::min<int64_t>(rows_per_call, m_end - m - rows_per_call)
                              : std::min<int64_t>(rows_per_call, m_end - rb * kRowBlock);
                for (int64_t r = 0; r < next_count; ++r) {
                  __builtin_prefetch(next + r * p.ldc, 1);
                  __builtin_prefetch(next + r * p.ldc + S - 1, 1);
                }
              }
            }
            if (cols == S)
              micro_kernel_rows<scalar_t, R, true>(rows, kc, a_m, p.lda, strip_b, strip_bias, c_m,
                                                   p.ldc, cols, load_c);
            else
              micro_kernel_rows<scalar_t, R, false>(rows, kc, a_m, p.lda, strip_b, strip_bias, c_m,
                                                    p.ldc, cols, load_c);
          }
        }
      }
    }
  };
  const int64_t items = p.batch * row_blocks * panels;
  if (!p.parallel || at::in_parallel_region()) return run(0, items);
  // Enough multiply-adds per task that scheduling stays small beside them.
  const int64_t per_item = std::min(M, kRowBlock) * P * std::max<int64_t>(K, 1);
  at::parallel_for(0, items, std::max<int64_t>(1, (int64_t(1) << 18) / per_item), run);
}

#if defined(CPU_CAPABILITY_AVX512)
// dst rows i (16 floats, ld_dst apart) = column i of the 16 x 16 block at src (rows ld_src
// apart), in registers: pairs of rows interleave by 1, then 2, then 4 and 8 values.
inline void transpose_16x16(const float* src, int64_t ld_src, float* dst, int64_t ld_dst) {
  __m512 r[16], t[16];
  for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(src + i * ld_src);
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i) {
    r[4 * i] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
    r[4 * i + 1] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0xEE);
    r[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
    r[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
  }
  for (int i = 0; i < 2; ++i) {
    for (int j = 0; j < 4; ++j) {
      t[8 * i + j] = _mm512_shuffle_f32x4(r[8 * i + j], r[8 * i + 4 + j], 0x88);
      t[8 * i + 4 + j] = _mm512_shuffle_f32x4(r[8 * i + j], r[8 * i + 4 + j], 0xDD);
    }
  }
  for (int j = 0; j < 8; ++j) {
    r[j] = _mm512_shuffle_f32x4(t[j], t[8 + j], 0x88);
    r[8 + j] = _mm512_shuffle_f32x4(t[j], t[8 + j], 0xDD);
  }
  for (int i = 0; i < 16; ++i) _mm512_storeu_ps(dst + i * ld_dst, r[i]);
}
#endif

// One panel from a transposed source (B = W^T of a row-major W, column j of B contiguous at
// s + j * ld): d[k * P + j] = B(k, j), zero past `cols`. float32 on AVX-512 moves 16 x 16
// blocks through registers (reads and writes whole lines); the rest reads along the
// contiguous columns.
template <typename scalar_t>
void pack_transposed_panel(const scalar_t* s, int64_t ld, int64_t cols, int64_t K, scalar_t* d) {
  constexpr int64_t P = kPanel<scalar_t>;
  int64_t k0 = 0;
#if defined(CPU_CAPABILITY_AVX512)
  if constexpr (std::is_same_v<scalar_t, float>) {
    if (cols == P) {
      for (; k0 + 16 <= K; k0 += 16)
        for (int64_t j0 = 0; j0 < P; j0 += 16)
          transpose_16x16(s + j0 * ld + k0, ld, d + k0 * P + j0, P);
    }
  }
#endif
  for (int64_t j = 0; j < P; ++j) {
    const scalar_t* col = s + j * ld;
    for (int64_t k = k0; k < K; ++k) d[k * P + j] = j < cols ? col[k] : scalar_t(0);
  }
}

template <typename scalar_t>
void gemm_pack(const GemmPackParams& p) {
  constexpr int64_t P = kPanel<scalar_t>;
  const auto* src = static_cast<const scalar_t*>(p.src);
  auto* dst = static_cast<scalar_t*>(p.packed);
  const int64_t K = p.K, N = p.N;
  const int64_t panels = (N + P - 1) / P;
  const int64_t size = gemm_packed_size(p.dtype, K, N);
  at::parallel_for(0, p.batch * panels, 1, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t batch = item / panels, panel = item % panels;
      const scalar_t* s = src + batch * p.src_batch_stride;
      scalar_t* d = dst + batch * size + panel * K * P;
      const int64_t cols = std::min(P, N - panel * P);
      const scalar_t* s_panel = s + panel * P * p.src_col_stride;
      if (p.src_col_stride == 1 && cols == P) {
        // whole rows of the panel are contiguous in the source
        for (int64_t k = 0; k < K; ++k) std::copy_n(s_panel + k * p.src_row_stride, P, d + k * P);
      } else if (p.src_col_stride == 1 || p.src_row_stride != 1) {
        for (int64_t k = 0; k < K; ++k)
          for (int64_t j = 0; j < P; ++j)
            d[k * P + j] =
                j < cols ? s_panel[k * p.src_row_stride + j * p.src_col_stride] : scalar_t(0);
      } else {
        pack_transposed_panel(s_panel, p.src_col_stride, cols, K, d);
      }
    }
  });
}

}  // namespace

void gemm_packed_cpu(const PackedGemmParams& p) {
  if (p.dtype == Dtype::kFloat64) return gemm_packed<double>(p);
  gemm_packed<float>(p);
}

void gemm_pack_cpu(const GemmPackParams& p) {
  if (p.dtype == Dtype::kFloat64) return gemm_pack<double>(p);
  gemm_pack<float>(p);
}

}  // namespace fastcrnn::cpu::FASTCRNN_ISA_NS
