// CTC forced alignment on CUDA: one block per sample. The block's threads share the states of a
// frame, four consecutive states per thread (so each writes whole backpointer bytes: no two
// threads touch one byte), with the two score rows in a global (N, 2, W) workspace and one
// barrier per frame, as the CTC alpha recursion. One thread then walks the backpointers.
#include <cstdint>

#include "kernels/align.h"
#include "kernels/cuda_utils.cuh"

namespace fastcrnn {
namespace {

constexpr int kThreads = 128;

template <typename scalar_t>
__global__ void forced_align_kernel(CtcAlignParams a) {
  using acc_t = typename cuda::AccType<scalar_t>::type;
  const CtcParams& p = a.in;
  const int64_t n = blockIdx.x;
  __shared__ int64_t states;
  if (threadIdx.x == 0) states = start_alignment_row<acc_t>(a, n);
  __syncthreads();
  const int64_t S = states;  // block-uniform: every thread takes the same branches below
  if (S == 0) return;
  const int64_t Tn = p.input_lengths[n];
  const int64_t* tgt = p.targets + p.target_offsets[n];
  const scalar_t* lp = static_cast<const scalar_t*>(p.scores) + n * p.stride_n;
  acc_t* rows = static_cast<acc_t*>(a.alpha) + n * 2 * p.W;
  uint8_t* bp = a.backpointers + n * p.T * a.backpointer_bytes;
  const acc_t ninf = -acc_t(1) / acc_t(0);
  for (int64_t s = threadIdx.x; s < S; s += blockDim.x) {
    acc_t v = ninf;
    if (s == 0) v = cuda::to_acc(lp[p.blank]);
    if (s == 1) v = cuda::to_acc(lp[tgt[0]]);
    rows[s] = v;
  }
  __syncthreads();
  const int64_t groups = (S + 3) / 4;
  for (int64_t t = 1; t < Tn; ++t) {
    const acc_t* prev = rows + ((t - 1) & 1) * p.W;
    acc_t* cur = rows + (t & 1) * p.W;
    const scalar_t* row = lp + t * p.stride_t;
    const auto emission = [row](int64_t c) { return static_cast<acc_t>(cuda::to_acc(row[c])); };
    uint8_t* bp_row = bp + t * a.backpointer_bytes;
    for (int64_t g = threadIdx.x; g < groups; g += blockDim.x)
      viterbi_group<acc_t>(tgt, p.blank, S, g, prev, cur, emission, bp_row);
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    const auto to_acc = [](scalar_t v) { return static_cast<acc_t>(cuda::to_acc(v)); };
    finish_alignment_row<scalar_t, acc_t>(a, n, S, rows + ((Tn - 1) & 1) * p.W, to_acc);
  }
}

}  // namespace

void ctc_forced_align_cuda(const CtcAlignParams& p, void* cuda_stream) {
  if (p.in.N == 0) return;
  auto stream = static_cast<cudaStream_t>(cuda_stream);
  FASTCRNN_CUDA_DTYPE_SWITCH(p.in.dtype, {
    forced_align_kernel<scalar_t><<<static_cast<unsigned>(p.in.N), kThreads, 0, stream>>>(p);
  });
  cuda::check_launch("forced_align_kernel");
}

}  // namespace fastcrnn
