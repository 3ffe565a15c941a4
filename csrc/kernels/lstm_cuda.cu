// Fused LSTM pointwise steps on CUDA: one thread per (direction, batch element, hidden unit),
// both directions in one launch. Storage dtype float32/float16/bfloat16/float64; the cell
// state and all arithmetic in float32 (float64 for float64). Torch-free.
#include <cmath>
#include <cstdint>

#include "kernels/cuda_utils.cuh"
#include "kernels/lstm.h"

namespace fastcrnn {
namespace {

using cuda::to_acc;
constexpr int kThreads = 256;

template <typename T>
__device__ __forceinline__ T from_float(float v) {
  return static_cast<T>(v);
}
template <>
__device__ __forceinline__ __half from_float<__half>(float v) {
  return __float2half(v);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16(v);
}
template <typename T>
__device__ __forceinline__ T from_acc(double v) {
  return static_cast<T>(v);
}
template <typename T>
__device__ __forceinline__ T from_acc(float v) {
  return from_float<T>(v);
}

__device__ __forceinline__ float sigmoid_acc(float x) { return 1.f / (1.f + expf(-x)); }
__device__ __forceinline__ double sigmoid_acc(double x) { return 1.0 / (1.0 + exp(-x)); }
__device__ __forceinline__ float tanh_acc(float x) { return tanhf(x); }
__device__ __forceinline__ double tanh_acc(double x) { return tanh(x); }

template <typename scalar_t>
__global__ void lstm_forward_kernel(LstmForwardParams p) {
  using acc_t = typename cuda::AccType<scalar_t>::type;
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= p.D * p.N * p.H) return;
  const int64_t H = p.H;
  const int64_t j = idx % H, row = idx / H;
  const int64_t n = row % p.N;
  const int d = static_cast<int>(row / p.N);
  const bool valid = p.lengths == nullptr || p.t[d] < p.lengths[n];
  scalar_t* hn = static_cast<scalar_t*>(p.h_next[d]) + n * H + j;
  acc_t* cn = static_cast<acc_t*>(p.c_next[d]) + n * H + j;
  const acc_t cp = static_cast<const acc_t*>(p.c_prev[d])[n * H + j];
  scalar_t* out = p.out[d] ? static_cast<scalar_t*>(p.out[d]) + n * p.out_stride + j : nullptr;
  if (!valid) {
    *hn = static_cast<const scalar_t*>(p.h_prev[d])[n * H + j];
    *cn = cp;
    if (out) *out = from_acc<scalar_t>(acc_t(0));
    return;
  }
  scalar_t* g = static_cast<scalar_t*>(p.gates[d]) + n * p.gates_stride + j;
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
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= p.D * p.N * p.H) return;
  const int64_t H = p.H;
  const int64_t j = idx % H, row = idx / H;
  const int64_t n = row % p.N;
  const int d = static_cast<int>(row / p.N);
  const bool valid = p.lengths == nullptr || p.t[d] < p.lengths[n];
  acc_t* dh_carry = static_cast<acc_t*>(p.dh_carry[d]) + n * H + j;
  acc_t* dcp = static_cast<acc_t*>(p.dc[d]) + n * H + j;
  scalar_t* dg = static_cast<scalar_t*>(p.dgates[d]) + n * p.dgates_stride + j;
  acc_t dh = *dh_carry;
  if (p.dh_rec[d])
    dh += static_cast<acc_t>(to_acc(static_cast<const scalar_t*>(p.dh_rec[d])[n * H + j]));
  if (!valid) {
    *dh_carry = dh;
    const scalar_t zero = from_acc<scalar_t>(acc_t(0));
    dg[0] = zero;
    dg[H] = zero;
    dg[2 * H] = zero;
    dg[3 * H] = zero;
    return;
  }
  if (p.dout[d])
    dh +=
        static_cast<acc_t>(to_acc(static_cast<const scalar_t*>(p.dout[d])[n * p.dout_stride + j]));
  const scalar_t* a = static_cast<const scalar_t*>(p.acts[d]) + n * p.acts_stride + j;
  const acc_t i = static_cast<acc_t>(to_acc(a[0])), f = static_cast<acc_t>(to_acc(a[H]));
  const acc_t g = static_cast<acc_t>(to_acc(a[2 * H])), o = static_cast<acc_t>(to_acc(a[3 * H]));
  const acc_t cp = static_cast<const acc_t*>(p.c_prev[d])[n * H + j];
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
