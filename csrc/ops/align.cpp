// CTC forced alignment: the argument checks shared by CPU and CUDA, and the CPU registration.
#include "ops/align.h"

#include <torch/library.h>

#include "ops/common.h"
#include "ops/ctc.h"

namespace fastcrnn::ops {

AlignOutputs prepare_forced_align(const at::Tensor& log_probs, const at::Tensor& targets,
                                  const at::Tensor& input_lengths, const at::Tensor& target_lengths,
                                  int64_t blank, bool validate, CtcAlignParams& a,
                                  std::vector<at::Tensor>& keep) {
  const int64_t longest = prepare_ctc(log_probs, targets, input_lengths, target_lengths, blank,
                                      /*from_logits=*/false, validate, a.in, keep);
  const bool padded = targets.dim() == 2;
  a.token_columns = padded ? targets.size(1) : (longest >= 0 ? longest : targets.numel());
  a.backpointer_bytes = (a.in.W + 3) / 4;
  const auto acc = log_probs.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const auto opts = log_probs.options();
  const int64_t N = a.in.N, T = a.in.T;
  at::Tensor labels = at::empty({N, T}, opts.dtype(at::kLong));
  at::Tensor frame_lp = at::empty({N, T}, opts.dtype(acc));
  at::Tensor starts = at::empty({N, a.token_columns}, opts.dtype(at::kLong));
  at::Tensor ends = at::empty({N, a.token_columns}, opts.dtype(at::kLong));
  at::Tensor token_lp = at::empty({N, a.token_columns}, opts.dtype(acc));
  at::Tensor scores = at::empty({N}, opts.dtype(acc));
  at::Tensor aligned = at::empty({N}, opts.dtype(at::kBool));
  at::Tensor backpointers = at::empty({N, T, a.backpointer_bytes}, opts.dtype(at::kByte));
  keep.push_back(backpointers);
  a.backpointers = backpointers.data_ptr<uint8_t>();
  if (log_probs.is_cuda()) {
    at::Tensor rows = at::empty({N, 2, a.in.W}, opts.dtype(acc));
    keep.push_back(rows);
    a.alpha = rows.data_ptr();
  }
  a.labels = labels.data_ptr<int64_t>();
  a.frame_log_probs = frame_lp.data_ptr();
  a.token_starts = starts.data_ptr<int64_t>();
  a.token_ends = ends.data_ptr<int64_t>();
  a.token_log_probs = token_lp.data_ptr();
  a.path_scores = scores.data_ptr();
  a.aligned = aligned.data_ptr<bool>();
  return {labels, frame_lp, starts, ends, token_lp, scores, aligned};
}

namespace {

void run_cpu(const CtcAlignParams& p) { FASTCRNN_CPU_DISPATCH(ctc_forced_align_cpu, p); }

AlignOutputs forced_align_cpu_op(const at::Tensor& log_probs, const at::Tensor& targets,
                                 const at::Tensor& input_lengths, const at::Tensor& target_lengths,
                                 int64_t blank, bool validate) {
  CtcAlignParams p;
  std::vector<at::Tensor> keep;
  AlignOutputs out = prepare_forced_align(log_probs, targets, input_lengths, target_lengths, blank,
                                          validate, p, keep);
  run_cpu(p);
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastcrnn, CPU, m) { m.impl("ctc_forced_align", &forced_align_cpu_op); }

}  // namespace fastcrnn::ops
