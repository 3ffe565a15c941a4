#include "ops/decode.h"

#include <torch/library.h>

#include "ops/common.h"

namespace fastcrnn::ops {

DecodeOutputs prepare_greedy_decode(const at::Tensor& scores, const at::Tensor& input_lengths,
                                    int64_t blank, bool logits, bool validate,
                                    GreedyDecodeParams& p, std::vector<at::Tensor>& keep) {
  TORCH_CHECK_VALUE(scores.dim() == 3, "log_probs must have shape (T, N, C), got ", scores.sizes());
  p.dtype = kernel_dtype(scores, "log_probs");
  p.T = scores.size(0);
  p.N = scores.size(1);
  p.C = scores.size(2);
  TORCH_CHECK_VALUE(p.C > 0, "log_probs must have at least one class (C > 0)");
  TORCH_CHECK_VALUE(blank >= 0 && blank < p.C, "blank must be in [0, ", p.C, "), got ", blank);
  TORCH_CHECK_VALUE(p.T < (int64_t(1) << 31) && p.C < (int64_t(1) << 31),
                    "log_probs: T and C must be below 2^31");
  at::Tensor lengths = checked_lengths(input_lengths, p.N, scores.device(), "input_lengths");
  if (validate || scores.is_cpu()) {
    TORCH_CHECK_VALUE(all_within(lengths, 0, p.T), "input_lengths must lie in [0, T=", p.T, "]");
  }
  const auto long_opts = scores.options().dtype(at::kLong);
  at::Tensor tokens = at::empty({p.N, p.T}, long_opts);
  at::Tensor out_lengths = at::empty({p.N}, long_opts);
  at::Tensor probs = at::empty({p.N, p.T}, scores.options().dtype(at::kFloat));
  at::Tensor frames = at::empty({p.N, p.T}, long_opts);
  at::Tensor frame_label = at::empty({p.T, p.N}, scores.options().dtype(at::kInt));
  at::Tensor frame_prob = at::empty({p.T, p.N}, scores.options().dtype(at::kFloat));
  keep = {scores, lengths, frame_label, frame_prob};
  p.scores = scores.data_ptr();
  p.stride_t = scores.stride(0);
  p.stride_n = scores.stride(1);
  p.stride_c = scores.stride(2);
  p.input_lengths = lengths.data_ptr<int64_t>();
  p.blank = blank;
  p.logits = logits;
  p.frame_label = frame_label.data_ptr<int32_t>();
  p.frame_prob = frame_prob.data_ptr<float>();
  p.tokens = tokens.data_ptr<int64_t>();
  p.lengths = out_lengths.data_ptr<int64_t>();
  p.token_probs = probs.data_ptr<float>();
  p.token_frames = frames.data_ptr<int64_t>();
  return {tokens, out_lengths, probs, frames};
}

namespace {

void run_cpu(const GreedyDecodeParams& p) { FASTCRNN_CPU_DISPATCH(greedy_decode_cpu, p); }

DecodeOutputs greedy_decode_cpu_op(const at::Tensor& scores, const at::Tensor& input_lengths,
                                   int64_t blank, bool logits, bool validate) {
  GreedyDecodeParams p;
  std::vector<at::Tensor> keep;
  DecodeOutputs out =
      prepare_greedy_decode(scores, input_lengths, blank, logits, validate, p, keep);
  run_cpu(p);
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastcrnn, CPU, m) { m.impl("greedy_decode", &greedy_decode_cpu_op); }

}  // namespace fastcrnn::ops
