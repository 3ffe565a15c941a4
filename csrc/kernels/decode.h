// CTC greedy decoding: launcher declarations shared by ops/ and kernels/. Torch-free.
#pragma once
#include <cstdint>

#include "kernels/common.h"
#include "kernels/cpu_isa.h"

namespace fastcrnn {

// Greedy (best-path) decoding of a (T, N, C) tensor of scores given by strides in elements.
// Phase 1 writes, for every frame (t, n) with t < input_lengths[n], the first maximal class and
// its probability (exp(score), or softmax probability when `logits`) into the (T, N) workspace.
// Phase 2 collapses repeats, drops blanks and writes the (N, T) outputs padded with -1 / 0.
// A row whose length lies outside [0, T] decodes to length -1 and all padding.
struct GreedyDecodeParams {
  const void* scores = nullptr;
  Dtype dtype = Dtype::kFloat32;
  int64_t T = 0, N = 0, C = 0;
  int64_t stride_t = 0, stride_n = 0, stride_c = 0;
  const int64_t* input_lengths = nullptr;  // (N,)
  int64_t blank = 0;
  bool logits = false;
  int32_t* frame_label = nullptr;   // (T, N) workspace
  float* frame_prob = nullptr;      // (T, N) workspace
  int64_t* tokens = nullptr;        // (N, T)
  int64_t* lengths = nullptr;       // (N,)
  float* token_probs = nullptr;     // (N, T)
  int64_t* token_frames = nullptr;  // (N, T)
};

void greedy_decode_cuda(const GreedyDecodeParams& p, void* cuda_stream);

#if defined(__CUDACC__)
#define FASTCRNN_HOST_DEVICE __host__ __device__
#else
#define FASTCRNN_HOST_DEVICE
#endif

// Phase 2 for one sequence n, shared by the CPU loop and the CUDA thread-per-sequence kernel.
inline FASTCRNN_HOST_DEVICE void collapse_sequence(const GreedyDecodeParams& p, int64_t n) {
  int64_t* tokens = p.tokens + n * p.T;
  float* probs = p.token_probs + n * p.T;
  int64_t* frames = p.token_frames + n * p.T;
  const int64_t len = p.input_lengths[n];
  int64_t count = 0;
  if (len < 0 || len > p.T) {
    p.lengths[n] = -1;
  } else {
    int32_t prev = -1;
    for (int64_t t = 0; t < len; ++t) {
      const int32_t label = p.frame_label[t * p.N + n];
      const float prob = p.frame_prob[t * p.N + n];
      if (label != prev) {
        if (label != p.blank) {
          tokens[count] = label;
          probs[count] = prob;
          frames[count] = t;
          ++count;
        }
      } else if (label != p.blank && (prob > probs[count - 1] || prob != prob)) {
        probs[count - 1] = prob;  // a run's probability is its highest (NaN wins, as torch.max)
      }
      prev = label;
    }
    p.lengths[n] = count;
  }
  for (int64_t k = count; k < p.T; ++k) {
    tokens[k] = -1;
    probs[k] = 0.f;
    frames[k] = -1;
  }
}

}  // namespace fastcrnn

FASTCRNN_DECLARE_CPU_KERNEL(void, greedy_decode_cpu, (const ::fastcrnn::GreedyDecodeParams& p))
