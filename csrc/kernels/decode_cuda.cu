// CTC greedy decoding on CUDA: one warp per frame for the argmax (memory-bound: each score is
// read once, with 16-byte loads when the class axis is contiguous and aligned), then one thread
// per sequence to collapse runs (reads the small (T, N) workspace, coalesced across n).
#include <cmath>
#include <cstdint>

#include "kernels/cuda_utils.cuh"
#include "kernels/decode.h"

namespace fastcrnn {
namespace {

using cuda::to_acc;
constexpr int kWarpsPerBlock = 8;
constexpr int kNoIndex = 0x7fffffff;

template <typename acc_t>
__device__ __forceinline__ bool better(acc_t a, acc_t b) {
  return a > b || (isnan(a) && !isnan(b));
}

// Per-lane running state: first maximal element, and an online sum of exp(x - run_max).
template <typename acc_t>
struct FrameState {
  acc_t max = -INFINITY;
  int idx = kNoIndex;
  acc_t run_max = -INFINITY;
  acc_t sum = 0;
  bool has_nan = false;

  __device__ __forceinline__ void add(acc_t v, int c, bool want_sum) {
    if (idx == kNoIndex || better(v, max)) {
      max = v;
      idx = c;
    }
    if (want_sum) {
      if (isnan(v))
        has_nan = true;
      else if (v > run_max) {
        sum = sum * exp(run_max - v) + acc_t(1);
        run_max = v;
      } else if (v != -INFINITY)
        sum += exp(v - run_max);
    }
  }

  __device__ __forceinline__ void combine(const FrameState& o, bool want_sum) {
    if (o.idx != kNoIndex && (idx == kNoIndex || better(o.max, max) ||
                              ((o.max == max || (isnan(o.max) && isnan(max))) && o.idx < idx))) {
      max = o.max;
      idx = o.idx;
    }
    if (want_sum) {
      has_nan = has_nan || o.has_nan;
      const acc_t hi = run_max > o.run_max ? run_max : o.run_max;
      if (hi != -INFINITY) {
        const acc_t a = run_max == -INFINITY ? acc_t(0) : sum * exp(run_max - hi);
        const acc_t b = o.run_max == -INFINITY ? acc_t(0) : o.sum * exp(o.run_max - hi);
        sum = a + b;  // inf - inf inside exp gives NaN, as log_softmax does for +inf scores
        run_max = hi;
      }
    }
  }
};

template <typename acc_t>
__device__ FrameState<acc_t> shfl_down(const FrameState<acc_t>& s, int offset) {
  FrameState<acc_t> o;
  o.max = __shfl_down_sync(0xffffffffu, s.max, offset);
  o.idx = __shfl_down_sync(0xffffffffu, s.idx, offset);
  o.run_max = __shfl_down_sync(0xffffffffu, s.run_max, offset);
  o.sum = __shfl_down_sync(0xffffffffu, s.sum, offset);
  o.has_nan = __shfl_down_sync(0xffffffffu, static_cast<int>(s.has_nan), offset) != 0;
  return o;
}

template <typename scalar_t>
__global__ void best_path_frames_kernel(GreedyDecodeParams p, bool vector_loads) {
  using acc_t = typename cuda::AccType<scalar_t>::type;
  const int lane = threadIdx.x % 32;
  const int64_t frame = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  if (frame >= p.T * p.N) return;
  const int64_t t = frame / p.N, n = frame % p.N;
  const int64_t len = p.input_lengths[n];
  if (len < 0 || len > p.T || t >= len) return;  // whole warp leaves together
  const scalar_t* row = static_cast<const scalar_t*>(p.scores) + t * p.stride_t + n * p.stride_n;

  FrameState<acc_t> s;
  if (vector_loads) {
    // 16 bytes per lane per load; C * sizeof(scalar_t) is a multiple of 16 here
    constexpr int kPack = 16 / sizeof(scalar_t);
    const int64_t packs = p.C / kPack;
    const uint4* packed = reinterpret_cast<const uint4*>(row);
    for (int64_t k = lane; k < packs; k += 32) {
      const uint4 raw = __ldg(packed + k);
      const scalar_t* v = reinterpret_cast<const scalar_t*>(&raw);
#pragma unroll
      for (int j = 0; j < kPack; ++j)
        s.add(to_acc(v[j]), static_cast<int>(k * kPack + j), p.logits);
    }
  } else {
    for (int64_t c = lane; c < p.C; c += 32)
      s.add(to_acc(row[c * p.stride_c]), static_cast<int>(c), p.logits);
  }
  for (int offset = 16; offset > 0; offset /= 2) s.combine(shfl_down(s, offset), p.logits);
  if (lane != 0) return;

  int label = s.idx;
  acc_t prob;
  if (!p.logits) {
    prob = exp(s.max);
  } else if (s.has_nan || isinf(s.max)) {
    // log_softmax turns a row holding NaN or +inf, or all -inf, into all NaN: argmax 0
    label = 0;
    prob = NAN;
  } else {
    prob = acc_t(1) / s.sum;
  }
  p.frame_label[frame] = label;
  p.frame_prob[frame] = static_cast<float>(prob);
}

__global__ void collapse_runs_kernel(GreedyDecodeParams p) {
  const int64_t n = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (n < p.N) collapse_sequence(p, n);
}

}  // namespace

void greedy_decode_cuda(const GreedyDecodeParams& p, void* cuda_stream) {
  auto stream = static_cast<cudaStream_t>(cuda_stream);
  if (p.N == 0) return;
  const int64_t frames = p.T * p.N;
  if (frames > 0 && p.C > 0) {
    FASTCRNN_CUDA_DTYPE_SWITCH(p.dtype, {
      const bool vector_loads = p.stride_c == 1 && (p.C * sizeof(scalar_t)) % 16 == 0 &&
                                (p.stride_t * sizeof(scalar_t)) % 16 == 0 &&
                                (p.stride_n * sizeof(scalar_t)) % 16 == 0 &&
                                reinterpret_cast<uintptr_t>(p.scores) % 16 == 0;
      const int64_t blocks = cuda::ceil_div(frames, kWarpsPerBlock);
      best_path_frames_kernel<scalar_t>
          <<<static_cast<unsigned>(blocks), 32 * kWarpsPerBlock, 0, stream>>>(p, vector_loads);
    });
    cuda::check_launch("best_path_frames_kernel");
  }
  collapse_runs_kernel<<<static_cast<unsigned>(cuda::ceil_div(p.N, 128)), 128, 0, stream>>>(p);
  cuda::check_launch("collapse_runs_kernel");
}

}  // namespace fastcrnn
