// CTC loss forward-backward on CUDA. Torch-free.
//
// Forward: (from_logits) one warp per (t, n) row computes the log-sum-exp normaliser; then one
// block per sample runs the log-space alpha recursion over the reachable window of states
// (threads over states, __syncthreads per frame), rows kept in the global log_alpha output, so
// there is no limit on the label length. Backward: one block per sample runs the beta recursion
// into a global workspace and links the states that share a label; then one block per (t, n)
// row writes the gradient: the dense term grad_nll * p over C, then, after a barrier, each
// label's first state alone sums the posteriors of all its states (in state order) and rewrites
// that class. No floating-point atomics: the result is bitwise deterministic. Accumulation is in
// float (double for double input); half / bfloat16 are read and written as storage types.
#include <cmath>
#include <cstdint>

#include "kernels/ctc.h"
#include "kernels/cuda_utils.cuh"

namespace fastcrnn {
namespace {

using cuda::from_acc;
using cuda::to_acc;
constexpr int kThreads = 256;
constexpr int kRowWarps = 8;
enum : int32_t { kKindNormal = 0, kKindZero = 1, kKindNaN = 2 };

template <typename acc_t>
__device__ __forceinline__ acc_t neg_inf() {
  return -INFINITY;
}

template <typename acc_t>
__device__ __forceinline__ acc_t lse3(acc_t a, acc_t b, acc_t c) {
  if (isnan(a) || isnan(b) || isnan(c)) return NAN;
  const acc_t m = fmax(fmax(a, b), c);
  if (m == neg_inf<acc_t>()) return m;
  return m + log(exp(a - m) + exp(b - m) + exp(c - m));
}

template <typename acc_t>
__device__ __forceinline__ acc_t lse2(acc_t a, acc_t b) {
  if (isnan(a) || isnan(b)) return NAN;
  const acc_t m = fmax(a, b);
  if (m == neg_inf<acc_t>()) return m;
  return m + log(exp(a - m) + exp(b - m));
}

struct Sample {
  int64_t Tn, L, S;
  const int64_t* labels;
  bool bad, impossible;
};

// Checks sample n cooperatively (every thread of the block must call it).
__device__ Sample load_sample(const CtcParams& p, int64_t n) {
  Sample s;
  s.Tn = p.input_lengths[n];
  s.L = p.target_lengths[n];
  const int64_t off = p.target_offsets[n];
  s.bad = s.Tn < 0 || s.Tn > p.T || s.L < 0 || s.L > p.max_target_length || off < 0 ||
          off > p.targets_numel - s.L;
  s.labels = p.targets + (s.bad ? 0 : off);
  int wrong = 0;
  if (!s.bad) {
    for (int64_t i = threadIdx.x; i < s.L; i += blockDim.x) {
      const int64_t c = s.labels[i];
      wrong |= (c < 0 || c >= p.C || c == p.blank);
    }
  }
  // a row that would need more states than a workspace row holds (W) is bad, never read past
  s.bad = __syncthreads_or(wrong) || s.bad || (s.L <= s.Tn && 2 * s.L + 1 > p.W);
  if (s.bad) {
    s.Tn = s.Tn < 0 ? 0 : (s.Tn > p.T ? p.T : s.Tn);
    s.L = 0;
  }
  s.impossible = s.L > s.Tn;
  s.S = 2 * s.L + 1;
  return s;
}

__device__ __forceinline__ int64_t label_of(const Sample& s, int64_t st, int64_t blank) {
  return (st & 1) ? s.labels[st >> 1] : blank;
}
__device__ __forceinline__ int64_t window_lo(const Sample& s, int64_t t) {
  const int64_t v = s.S - 2 * (s.Tn - t);
  return v > 0 ? v : 0;
}
__device__ __forceinline__ int64_t window_hi(const Sample& s, int64_t t) {
  const int64_t v = 2 * t + 1;
  return v < s.S - 1 ? v : s.S - 1;
}
__device__ __forceinline__ bool can_skip(const Sample& s, int64_t st) {  // st - 2 -> st
  return (st & 1) && st >= 3 && s.labels[st >> 1] != s.labels[(st >> 1) - 1];
}

template <typename scalar_t, typename acc_t>
__device__ __forceinline__ acc_t emission(const CtcParams& p, int64_t t, int64_t n, int64_t c) {
  const scalar_t* x = static_cast<const scalar_t*>(p.scores);
  const acc_t v = to_acc(x[t * p.stride_t + n * p.stride_n + c]);
  return p.from_logits ? v - static_cast<const acc_t*>(p.norms)[t * p.N + n] : v;
}

// ---------------------------------------------------------------- forward

template <typename scalar_t>
__global__ void norms_kernel(CtcParams p) {
  using acc_t = typename cuda::AccType<scalar_t>::type;
  const int lane = threadIdx.x % 32;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kRowWarps + threadIdx.x / 32;
  if (row >= p.T * p.N) return;
  const int64_t t = row / p.N, n = row % p.N;
  const scalar_t* x = static_cast<const scalar_t*>(p.scores) + t * p.stride_t + n * p.stride_n;
  acc_t m = neg_inf<acc_t>();
  int bad = 0;
  for (int64_t c = lane; c < p.C; c += 32) {
    const acc_t v = to_acc(x[c]);
    bad |= isnan(v) || v == INFINITY;
    m = fmax(m, v);
  }
  for (int o = 16; o > 0; o /= 2) {
    m = fmax(m, __shfl_xor_sync(0xffffffffu, m, o));
    bad |= __shfl_xor_sync(0xffffffffu, bad, o);
  }
  acc_t sum = 0;
  if (!bad && m != neg_inf<acc_t>())
    for (int64_t c = lane; c < p.C; c += 32) sum += exp(to_acc(x[c]) - m);
  for (int o = 16; o > 0; o /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, o);
  if (lane == 0)
    static_cast<acc_t*>(p.norms)[row] = (bad || m == neg_inf<acc_t>()) ? acc_t(NAN) : m + log(sum);
}

template <typename scalar_t>
__global__ void alpha_kernel(CtcParams p) {
  using acc_t = typename cuda::AccType<scalar_t>::type;
  const int64_t n = blockIdx.x;
  const Sample s = load_sample(p, n);
  acc_t* alpha = static_cast<acc_t*>(p.log_alpha) + n * p.T * p.W;
  for (int64_t i = threadIdx.x; i < p.T * p.W; i += blockDim.x) alpha[i] = neg_inf<acc_t>();
  __syncthreads();
  acc_t* nll = static_cast<acc_t*>(p.nll);
  if (s.bad || s.Tn == 0 || s.impossible) {
    if (threadIdx.x == 0)
      nll[n] = s.bad ? acc_t(NAN) : (s.Tn == 0 && s.L == 0 ? acc_t(0) : acc_t(INFINITY));
    return;
  }
  for (int64_t st = window_lo(s, 0) + threadIdx.x; st <= window_hi(s, 0); st += blockDim.x)
    alpha[st] = emission<scalar_t, acc_t>(p, 0, n, label_of(s, st, p.blank));
  __syncthreads();
  for (int64_t t = 1; t < s.Tn; ++t) {
    const int64_t lo = window_lo(s, t), hi = window_hi(s, t);
    const acc_t* prev = alpha + (t - 1) * p.W;
    acc_t* cur = alpha + t * p.W;
    for (int64_t st = lo + threadIdx.x; st <= hi; st += blockDim.x) {
      const acc_t a = prev[st];
      const acc_t b = st >= 1 ? prev[st - 1] : neg_inf<acc_t>();
      const acc_t c = can_skip(s, st) ? prev[st - 2] : neg_inf<acc_t>();
      cur[st] = lse3(a, b, c) + emission<scalar_t, acc_t>(p, t, n, label_of(s, st, p.blank));
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    const acc_t* last = alpha + (s.Tn - 1) * p.W;
    nll[n] = -(s.S > 1 ? lse2(last[s.S - 1], last[s.S - 2]) : last[0]);
  }
}

// ---------------------------------------------------------------- backward

template <typename scalar_t>
__global__ void beta_kernel(CtcParams p) {
  using acc_t = typename cuda::AccType<scalar_t>::type;
  const int64_t n = blockIdx.x;
  const Sample s = load_sample(p, n);
  acc_t* beta = static_cast<acc_t*>(p.gamma) + n * p.T * p.W;
  int32_t* next = p.label_links + n * (2 * p.W + 1);
  int32_t* first = next + p.W;
  const acc_t v = static_cast<const acc_t*>(p.nll)[n];
  int32_t kind = kKindNormal;
  if (s.bad || isnan(v) || !isfinite(v)) {
    kind = (!s.bad && !isnan(v) && v > 0 && p.zero_infinity) ? kKindZero : kKindNaN;
  }
  if (threadIdx.x == 0) next[2 * p.W] = kind;
  if (kind != kKindNormal || s.Tn == 0) return;
  // links between the states of one label, in state order
  for (int64_t st = threadIdx.x; st < s.S; st += blockDim.x) {
    const int64_t c = label_of(s, st, p.blank);
    int32_t nx = -1;
    for (int64_t o = st + 2; o < s.S; o += 2)
      if (label_of(s, o, p.blank) == c) {
        nx = static_cast<int32_t>(o);
        break;
      }
    int32_t is_first = 1;
    for (int64_t o = st - 2; o >= 0; o -= 2)
      if (label_of(s, o, p.blank) == c) {
        is_first = 0;
        break;
      }
    next[st] = nx;
    first[st] = is_first;
  }
  for (int64_t i = threadIdx.x; i < s.Tn * p.W; i += blockDim.x) beta[i] = neg_inf<acc_t>();
  __syncthreads();
  {
    const int64_t t = s.Tn - 1;
    const int64_t lo = window_lo(s, t), hi = window_hi(s, t);
    for (int64_t st = lo + threadIdx.x; st <= hi; st += blockDim.x)
      beta[t * p.W + st] = emission<scalar_t, acc_t>(p, t, n, label_of(s, st, p.blank));
  }
  __syncthreads();
  for (int64_t t = s.Tn - 2; t >= 0; --t) {
    const int64_t lo = window_lo(s, t), hi = window_hi(s, t);
    const acc_t* nxt = beta + (t + 1) * p.W;
    acc_t* cur = beta + t * p.W;
    for (int64_t st = lo + threadIdx.x; st <= hi; st += blockDim.x) {
      const acc_t a = nxt[st];
      const acc_t b = st + 1 < s.S ? nxt[st + 1] : neg_inf<acc_t>();
      const acc_t c = (st + 2 < s.S && can_skip(s, st + 2)) ? nxt[st + 2] : neg_inf<acc_t>();
      cur[st] = lse3(a, b, c) + emission<scalar_t, acc_t>(p, t, n, label_of(s, st, p.blank));
    }
    __syncthreads();
  }
}

template <typename scalar_t>
__global__ void grad_kernel(CtcParams p) {
  using acc_t = typename cuda::AccType<scalar_t>::type;
  const int64_t row = blockIdx.x;
  const int64_t t = row / p.N, n = row % p.N;
  scalar_t* out = static_cast<scalar_t*>(p.grad) + row * p.C;
  const int32_t* next = p.label_links + n * (2 * p.W + 1);
  const int32_t* first = next + p.W;
  const int32_t kind = next[2 * p.W];
  int64_t Tn = p.input_lengths[n];
  Tn = Tn < 0 ? 0 : (Tn > p.T ? p.T : Tn);
  if (t >= Tn || kind != kKindNormal) {
    const acc_t fill = (t >= Tn || kind == kKindZero) ? acc_t(0) : acc_t(NAN);
    for (int64_t c = threadIdx.x; c < p.C; c += blockDim.x) out[c] = from_acc<scalar_t>(fill);
    return;
  }
  const acc_t g = static_cast<const acc_t*>(p.grad_nll)[n];
  const scalar_t* x = static_cast<const scalar_t*>(p.scores) + t * p.stride_t + n * p.stride_n;
  const acc_t norm = p.from_logits ? static_cast<const acc_t*>(p.norms)[row] : acc_t(0);
  for (int64_t c = threadIdx.x; c < p.C; c += blockDim.x)
    out[c] = from_acc<scalar_t>(g * exp(to_acc(x[c]) - norm));
  __syncthreads();
  // labels were validated by the beta kernel (kind normal)
  const int64_t L = p.target_lengths[n];
  const int64_t S = 2 * L + 1;
  const int64_t* labels = p.targets + p.target_offsets[n];
  const acc_t nll = static_cast<const acc_t*>(p.nll)[n];
  const acc_t* alpha = static_cast<const acc_t*>(p.log_alpha) + (n * p.T + t) * p.W;
  const acc_t* beta = static_cast<const acc_t*>(p.gamma) + (n * p.T + t) * p.W;
  for (int64_t st = threadIdx.x; st < S; st += blockDim.x) {
    if (!first[st]) continue;
    const int64_t c = (st & 1) ? labels[st >> 1] : p.blank;
    const acc_t lp = to_acc(x[c]) - norm;
    acc_t post = 0;
    for (int64_t o = st; o >= 0; o = next[o]) post += exp(alpha[o] + beta[o] - lp + nll);
    out[c] = from_acc<scalar_t>(g * exp(lp) - g * post);
  }
}

}  // namespace

void ctc_loss_forward_cuda(const CtcParams& p, void* cuda_stream) {
  auto stream = static_cast<cudaStream_t>(cuda_stream);
  if (p.N == 0) return;
  FASTCRNN_CUDA_DTYPE_SWITCH(p.dtype, {
    if (p.from_logits && p.T > 0) {
      const int64_t rows = p.T * p.N;
      norms_kernel<scalar_t>
          <<<static_cast<unsigned>(cuda::ceil_div(rows, kRowWarps)), 32 * kRowWarps, 0, stream>>>(
              p);
      cuda::check_launch("ctc norms_kernel");
    }
    alpha_kernel<scalar_t><<<static_cast<unsigned>(p.N), kThreads, 0, stream>>>(p);
    cuda::check_launch("ctc alpha_kernel");
  });
}

void ctc_loss_backward_cuda(const CtcParams& p, void* cuda_stream) {
  auto stream = static_cast<cudaStream_t>(cuda_stream);
  if (p.N == 0) return;
  FASTCRNN_CUDA_DTYPE_SWITCH(p.dtype, {
    beta_kernel<scalar_t><<<static_cast<unsigned>(p.N), kThreads, 0, stream>>>(p);
    cuda::check_launch("ctc beta_kernel");
    if (p.T > 0 && p.C > 0) {
      grad_kernel<scalar_t><<<static_cast<unsigned>(p.T * p.N), kThreads, 0, stream>>>(p);
      cuda::check_launch("ctc grad_kernel");
    }
  });
}

}  // namespace fastcrnn
