// Fused LSTM pointwise steps on the CPU. Compiled once per instruction set (see cpu_isa.h).
// Rows (direction, batch element) are spread over threads with at::parallel_for; along the
// hidden units float32/float64 use at::vec (exp/tanh vectorized), float16/bfloat16 a scalar
// loop in float32.
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "kernels/lstm.h"

namespace fastcrnn::cpu::FASTCRNN_ISA_NS {
namespace {

template <typename acc_t>
inline acc_t sigmoid(acc_t x) {
  return acc_t(1) / (acc_t(1) + std::exp(-x));
}

template <typename acc_t>
inline at::vec::Vectorized<acc_t> vsigmoid(const at::vec::Vectorized<acc_t>& x) {
  const at::vec::Vectorized<acc_t> one(acc_t(1));
  return one / (one + x.neg().exp());
}

// tanh of a vector. float32 does not take at::vec's (SLEEF's 1-ulp tanh, several times the
// cost of its exp, which made tanh the largest cost after the matrix products): below
// |x| = 0.55 an odd polynomial x + x^3 q(x^2) (least-squares fit, weighted for relative error:
// within 0.9 ulp there), above it (1 - e) / (1 + e) with e = exp(-2|x|), which cannot overflow
// and has no cancellation there (e <= 1/3); within 2 ulp of tanh everywhere, NaN in NaN out.
template <typename acc_t>
inline at::vec::Vectorized<acc_t> vtanh(const at::vec::Vectorized<acc_t>& x) {
  return x.tanh();
}

template <>
inline at::vec::Vectorized<float> vtanh(const at::vec::Vectorized<float>& x) {
  using Vec = at::vec::Vectorized<float>;
  const Vec one(1.0f), a = x.abs(), s = a * a;
  Vec q(-0.006364915054291487f);
  q = at::vec::fmadd(q, s, Vec(0.021133163943886757f));
  q = at::vec::fmadd(q, s, Vec(-0.05386650934815407f));
  q = at::vec::fmadd(q, s, Vec(0.13332712650299072f));
  q = at::vec::fmadd(q, s, Vec(-0.33333322405815125f));
  const Vec small = at::vec::fmadd(a * s, q, a);
  const Vec e = (a * Vec(-2.0f)).exp();
  const Vec large = (one - e) / (one + e);
  const Vec t = Vec::blendv(large, small, a < Vec(0.55f));
  return Vec::blendv(t, t.neg(), x < Vec(0.0f));
}

inline int64_t grain_rows(int64_t H) {
  return std::max<int64_t>(1, 4096 / std::max<int64_t>(H, 1));
}

template <typename scalar_t, typename acc_t>
void forward_row(scalar_t* g, const acc_t* cp, acc_t* cn, scalar_t* hn, scalar_t* out, int64_t H,
                 bool save) {
  int64_t j = 0;
  if constexpr (std::is_same_v<scalar_t, acc_t>) {
    using Vec = at::vec::Vectorized<acc_t>;
    constexpr int64_t W = Vec::size();
    for (; j + W <= H; j += W) {
      const Vec i = vsigmoid(Vec::loadu(g + j));
      const Vec f = vsigmoid(Vec::loadu(g + H + j));
      const Vec gg = vtanh(Vec::loadu(g + 2 * H + j));
      const Vec o = vsigmoid(Vec::loadu(g + 3 * H + j));
      const Vec c = f * Vec::loadu(cp + j) + i * gg;
      const Vec h = o * vtanh(c);
      if (save) {
        i.store(g + j);
        f.store(g + H + j);
        gg.store(g + 2 * H + j);
        o.store(g + 3 * H + j);
      }
      c.store(cn + j);
      h.store(hn + j);
      if (out) h.store(out + j);
    }
  }
  for (; j < H; ++j) {
    const acc_t i = sigmoid(static_cast<acc_t>(g[j]));
    const acc_t f = sigmoid(static_cast<acc_t>(g[H + j]));
    const acc_t gg = std::tanh(static_cast<acc_t>(g[2 * H + j]));
    const acc_t o = sigmoid(static_cast<acc_t>(g[3 * H + j]));
    const acc_t c = f * cp[j] + i * gg;
    const acc_t h = o * std::tanh(c);
    if (save) {
      g[j] = static_cast<scalar_t>(i);
      g[H + j] = static_cast<scalar_t>(f);
      g[2 * H + j] = static_cast<scalar_t>(gg);
      g[3 * H + j] = static_cast<scalar_t>(o);
    }
    cn[j] = c;
    hn[j] = static_cast<scalar_t>(h);
    if (out) out[j] = static_cast<scalar_t>(h);
  }
}

template <typename scalar_t, typename acc_t>
void forward_step(const LstmForwardParams& p) {
  const int64_t N = p.N, H = p.H;
  at::parallel_for(0, p.D * N, grain_rows(H), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t d = r / N, n = r % N;
      const bool valid = p.lengths == nullptr || p.t[d] < p.lengths[n];
      scalar_t* hn = static_cast<scalar_t*>(p.h_next[d]) + n * H;
      acc_t* cn = static_cast<acc_t*>(p.c_next[d]) + n * H;
      const acc_t* cp = static_cast<const acc_t*>(p.c_prev[d]) + n * H;
      scalar_t* out = p.out[d] ? static_cast<scalar_t*>(p.out[d]) + n * p.out_stride : nullptr;
      if (valid) {
        scalar_t* g = static_cast<scalar_t*>(p.gates[d]) + n * p.gates_stride;
        forward_row<scalar_t, acc_t>(g, cp, cn, hn, out, H, p.save_acts);
      } else {
        const scalar_t* hp = static_cast<const scalar_t*>(p.h_prev[d]) + n * H;
        if (hp != hn) std::copy(hp, hp + H, hn);
        if (cp != cn) std::copy(cp, cp + H, cn);
        if (out) std::fill(out, out + H, scalar_t(0));
      }
    }
  });
}

template <typename scalar_t, typename acc_t>
void backward_row(const scalar_t* a, const acc_t* cp, const scalar_t* dout, const scalar_t* dh_rec,
                  acc_t* dh_carry, acc_t* dc, scalar_t* dg, int64_t H) {
  int64_t j = 0;
  if constexpr (std::is_same_v<scalar_t, acc_t>) {
    using Vec = at::vec::Vectorized<acc_t>;
    constexpr int64_t W = Vec::size();
    const Vec one(acc_t(1)), zero(acc_t(0));
    for (; j + W <= H; j += W) {
      Vec dh = Vec::loadu(dh_carry + j);
      if (dh_rec) dh = dh + Vec::loadu(dh_rec + j);
      if (dout) dh = dh + Vec::loadu(dout + j);
      const Vec i = Vec::loadu(a + j), f = Vec::loadu(a + H + j);
      const Vec g = Vec::loadu(a + 2 * H + j), o = Vec::loadu(a + 3 * H + j);
      const Vec c_prev = Vec::loadu(cp + j);
      const Vec tc = vtanh(f * c_prev + i * g);
      const Vec dct = Vec::loadu(dc + j) + dh * o * (one - tc * tc);
      (dct * g * i * (one - i)).store(dg + j);
      (dct * c_prev * f * (one - f)).store(dg + H + j);
      (dct * i * (one - g * g)).store(dg + 2 * H + j);
      (dh * tc * o * (one - o)).store(dg + 3 * H + j);
      (dct * f).store(dc + j);
      zero.store(dh_carry + j);
    }
  }
  for (; j < H; ++j) {
    acc_t dh = dh_carry[j];
    if (dh_rec) dh += static_cast<acc_t>(dh_rec[j]);
    if (dout) dh += static_cast<acc_t>(dout[j]);
    const acc_t i = a[j], f = a[H + j], g = a[2 * H + j], o = a[3 * H + j];
    const acc_t c_prev = cp[j];
    const acc_t tc = std::tanh(f * c_prev + i * g);
    const acc_t dct = dc[j] + dh * o * (acc_t(1) - tc * tc);
    dg[j] = static_cast<scalar_t>(dct * g * i * (acc_t(1) - i));
    dg[H + j] = static_cast<scalar_t>(dct * c_prev * f * (acc_t(1) - f));
    dg[2 * H + j] = static_cast<scalar_t>(dct * i * (acc_t(1) - g * g));
    dg[3 * H + j] = static_cast<scalar_t>(dh * tc * o * (acc_t(1) - o));
    dc[j] = dct * f;
    dh_carry[j] = acc_t(0);
  }
}

template <typename scalar_t, typename acc_t>
void backward_step(const LstmBackwardParams& p) {
  const int64_t N = p.N, H = p.H;
  at::parallel_for(0, p.D * N, grain_rows(H), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t d = r / N, n = r % N;
      const bool valid = p.lengths == nullptr || p.t[d] < p.lengths[n];
      const scalar_t* dh_rec =
          p.dh_rec[d] ? static_cast<const scalar_t*>(p.dh_rec[d]) + n * H : nullptr;
      acc_t* dh_carry = static_cast<acc_t*>(p.dh_carry[d]) + n * H;
      acc_t* dc = static_cast<acc_t*>(p.dc[d]) + n * H;
      scalar_t* dg = static_cast<scalar_t*>(p.dgates[d]) + n * p.dgates_stride;
      if (valid) {
        const scalar_t* a = static_cast<const scalar_t*>(p.acts[d]) + n * p.acts_stride;
        const acc_t* cp = static_cast<const acc_t*>(p.c_prev[d]) + n * H;
        const scalar_t* dout =
            p.dout[d] ? static_cast<const scalar_t*>(p.dout[d]) + n * p.dout_stride : nullptr;
        backward_row<scalar_t, acc_t>(a, cp, dout, dh_rec, dh_carry, dc, dg, H);
      } else {
        if (dh_rec)
          for (int64_t j = 0; j < H; ++j) dh_carry[j] += static_cast<acc_t>(dh_rec[j]);
        std::fill(dg, dg + 4 * H, scalar_t(0));
      }
    }
  });
}

}  // namespace

void lstm_forward_step_cpu(const LstmForwardParams& p) {
  switch (p.dtype) {
    case Dtype::kFloat32:
      forward_step<float, float>(p);
      break;
    case Dtype::kFloat64:
      forward_step<double, double>(p);
      break;
    case Dtype::kFloat16:
      forward_step<c10::Half, float>(p);
      break;
    case Dtype::kBFloat16:
      forward_step<c10::BFloat16, float>(p);
      break;
  }
}

void lstm_backward_step_cpu(const LstmBackwardParams& p) {
  switch (p.dtype) {
    case Dtype::kFloat32:
      backward_step<float, float>(p);
      break;
    case Dtype::kFloat64:
      backward_step<double, double>(p);
      break;
    case Dtype::kFloat16:
      backward_step<c10::Half, float>(p);
      break;
    case Dtype::kBFloat16:
      backward_step<c10::BFloat16, float>(p);
      break;
  }
}

}  // namespace fastcrnn::cpu::FASTCRNN_ISA_NS
