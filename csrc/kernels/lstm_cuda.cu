// Fused LSTM pointwise steps on CUDA: one thread per (direction, batch element, hidden unit),
// both directions in one launch. Storage dtype float32/float16/bfloat16/float64; the cell
// state and all arithmetic in float32 (float64 for float64). Torch-free.
#include <cmath>
#include <cstdint>

#include "kernels/cuda_utils.cuh"
#include "kernels/lstm.h"

namespace fastcrnn {
namespace {

using cuda::from_acc;
using cuda::to_acc;
constexpr int kThreads = 256;

__device__ __forceinline__ float sigmoid_acc(float x) { return 1.f / (1.f + expf(-x)); }
__device__ __forceinline__ double sigmoid_acc(double x) { return 1.0 / (1.0 + exp(-x)); }
__device__ __forceinline__ float tanh_acc(float x) { return tanhf(x); }
__device__ __forceinline__ double tanh_acc(double x) { return tanh(x); }

// The hidden unit j of sequence n in direction d that a thread of a step kernel owns, and
// whether step p.t[d] still lies inside that sequence; d < 0 for a thread past the end.
struct StepUnit {
  int64_t j = 0, n = 0;
  int d = -1;
  bool valid = false;
};

template <typename Params>
__device__ __forceinline__ StepUnit step_unit(const Params& p) {
  StepUnit u;
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= p.D * p.N * p.H) return u;
  const int64_t row = idx / p.H;
  u.j = idx % p.H;
  u.n = row % p.N;
  u.d = static_cast<int>(row / p.N);
  u.valid = p.lengths == nullptr || p.t[u.d] < p.lengths[u.n];
  return u;
}

template <typename scalar_t>
__global__ void lstm_forward_kernel(LstmForwardParams p) {
  using acc_t = typename cuda::AccType<scalar_t>::type;
  const StepUnit u = step_unit(p);
  if (u.d < 0) return;
  const int64_t H = p.H, at = u.n * H + u.j;  // this unit in an (N, H) state
  const int d = u.d;
  scalar_t* hn = static_cast<scalar_t*>(p.h_next[d]) + at;
  acc_t* cn = static_cast<acc_t*>(p.c_next[d]) + at;
  const acc_t cp = static_cast<const acc_t*>(p.c_prev[d])[at];
  scalar_t* out = p.out[d] ? static_cast<scalar_t*>(p.out[d]) + u.n * p.out_stride + u.j : nullptr;
  if (!u.valid) {
    *hn = static_cast<const scalar_t*>(p.h_prev[d])[at];
    *cn = cp;
    if (out) *out = from_acc<scalar_t>(acc_t(0));
    return;
  }
  scalar_t* g = static_cast<scalar_t*>(p.gates[d]) + u.n * p.gates_stride + u.j;
  const acc_t i = sigmoid_acc(static_cast<acc_t>(to_acc(g[0])));
  const acc_t f = sigmoid_acc(static_cast<acc_t>(to_acc(g[H])));
  const acc_t gg = tanh_acc(static_cast<acc_t>(to_acc(g[2 * H])));
  const acc_t o = sigmoid_acc(static_cast<acc_t>(to_acc(g[3 * H])));
  const acc_t c = f * cp + i * gg;
  const acc_t h = o * tanh_acc(c);
  if (p.save_acts) {
    g[0] = from_acc<scalar_t>(i);
    g[H] = from_acc<scalar_t>(f);
    g[2 * H] = from_acc<scalar_t>(gg);
    g[3 * H] = from_acc<scalar_t>(o);
  }
  *cn = c;
  *hn = from_acc<scalar_t>(h);
  if (out) *out = from_acc<scalar_t>(h);
}

template <typename scalar_t>
__global__ void lstm_backward_kernel(LstmBackwardParams p) {
  using acc_t = typename cuda::AccType<scalar_t>::type;
  const StepUnit u = step_unit(p);
  if (u.d < 0) return;
  const int64_t H = p.H, at = u.n * H + u.j;  // this unit in an (N, H) state
  const int d = u.d;
  acc_t* dh_carry = static_cast<acc_t*>(p.dh_carry[d]) + at;
  acc_t* dcp = static_cast<acc_t*>(p.dc[d]) + at;
  scalar_t* dg = static_cast<scalar_t*>(p.dgates[d]) + u.n * p.dgates_stride + u.j;
  acc_t dh = *dh_carry;
  if (p.dh_rec[d]) dh += static_cast<acc_t>(to_acc(static_cast<const scalar_t*>(p.dh_rec[d])[at]));
  if (!u.valid) {
    *dh_carry = dh;
    const scalar_t zero = from_acc<scalar_t>(acc_t(0));
    dg[0] = zero;
    dg[H] = zero;
    dg[2 * H] = zero;
    dg[3 * H] = zero;
    return;
  }
  if (p.dout[d])
    dh += static_cast<acc_t>(
        to_acc(static_cast<const scalar_t*>(p.dout[d])[u.n * p.dout_stride + u.j]));
  const scalar_t* a = static_cast<const scalar_t*>(p.acts[d]) + u.n * p.acts_stride + u.j;
  const acc_t i = static_cast<acc_t>(to_acc(a[0])), f = static_cast<acc_t>(to_acc(a[H]));
  const acc_t g = static_cast<acc_t>(to_acc(a[2 * H])), o = static_cast<acc_t>(to_acc(a[3 * H]));
  const acc_t cp = static_cast<const acc_t*>(p.c_prev[d])[at];
  const acc_t tc = tanh_acc(f * cp + i * g);
  const acc_t one = acc_t(1);
  const acc_t dct = *dcp + dh * o * (one - tc * tc);
  dg[0] = from_acc<scalar_t>(dct * g * i * (one - i));
  dg[H] = from_acc<scalar_t>(dct * cp * f * (one - f));
  dg[2 * H] = from_acc<scalar_t>(dct * i * (one - g * g));
  dg[3 * H] = from_acc<scalar_t>(dh * tc * o * (one - o));
  *dcp = dct * f;
  *dh_carry = acc_t(0);
}

}  // namespace

void lstm_forward_step_cuda(const LstmForwardParams& p, void* cuda_stream) {
  const int64_t total = p.D * p.N * p.H;
  if (total == 0) return;
  auto stream = static_cast<cudaStream_t>(cuda_stream);
  const auto blocks = static_cast<unsigned>(cuda::ceil_div(total, kThreads));
  FASTCRNN_CUDA_DTYPE_SWITCH(p.dtype,
                             lstm_forward_kernel<scalar_t><<<blocks, kThreads, 0, stream>>>(p));
  cuda::check_launch("lstm_forward_kernel");
}

void lstm_backward_step_cuda(const LstmBackwardParams& p, void* cuda_stream) {
  const int64_t total = p.D * p.N * p.H;
  if (total == 0) return;
  auto stream = static_cast<cudaStream_t>(cuda_stream);
  const auto blocks = static_cast<unsigned>(cuda::ceil_div(total, kThreads));
  FASTCRNN_CUDA_DTYPE_SWITCH(p.dtype,
                             lstm_backward_kernel<scalar_t><<<blocks, kThreads, 0, stream>>>(p));
  cuda::check_launch("lstm_backward_kernel");
}

}  // namespace fastcrnn
