// CTC prefix beam search: argument checks, output allocation and the CPU registrations. The
// search runs on the host; a CUDA input is pruned on the device first (fastcrnn/ops/beam.py)
// and reaches ctc_beam_search_candidates as each frame's candidates only.
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "kernels/beam.h"
#include "ops/common.h"

namespace fastcrnn::ops {
namespace {

using BeamOutputs = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

void check_search_options(int64_t C, int64_t blank, int64_t beam_width, int64_t nbest,
                          int64_t max_tokens, const std::optional<double>& token_min_logp,
                          const std::optional<double>& beam_prune_logp, BeamSearchParams& p) {
  TORCH_CHECK_VALUE(C > 0, "log_probs must have at least one class (C > 0)");
  TORCH_CHECK_VALUE(blank >= 0 && blank < C, "blank must be in [0, ", C, "), got ", blank);
  TORCH_CHECK_VALUE(beam_width >= 1, "beam_width must be >= 1, got ", beam_width);
  TORCH_CHECK_VALUE(nbest >= 1 && nbest <= beam_width,
                    "nbest must be in [1, beam_width=", beam_width, "], got ", nbest);
  TORCH_CHECK_VALUE(max_tokens >= 0, "max_tokens must be >= 0 (0: every class), got ", max_tokens);
  TORCH_CHECK_VALUE(C < (int64_t(1) << 31), "log_probs: C must be below 2^31");
  TORCH_CHECK_VALUE(!beam_prune_logp.has_value() || *beam_prune_logp <= 0,
                    "beam_prune_logp must be <= 0 (a log-probability below the best), got ",
                    *beam_prune_logp);
  p.C = C;
  p.blank = blank;
  p.beam_width = beam_width;
  p.nbest = nbest;
  p.max_tokens = max_tokens;
  p.has_token_min_logp = token_min_logp.has_value();
  p.token_min_logp = token_min_logp.value_or(0.0);
  p.has_beam_prune_logp = beam_prune_logp.has_value();
  p.beam_prune_logp = beam_prune_logp.value_or(0.0);
}

void run_cpu(const BeamSearchParams& p) { FASTCRNN_CPU_DISPATCH(ctc_beam_search_cpu, p); }

BeamOutputs allocate_and_run(const at::Tensor& input_lengths, BeamSearchParams& p) {
  at::Tensor lengths = checked_lengths(input_lengths, p.N, at::kCPU, "input_lengths");
  TORCH_CHECK_VALUE(all_within(lengths, 0, p.T), "input_lengths must lie in [0, T=", p.T, "]");
  const auto opts = lengths.options();
  at::Tensor tokens = at::empty({p.N, p.nbest, p.T}, opts);
  at::Tensor out_lengths = at::empty({p.N, p.nbest}, opts);
  at::Tensor scores = at::empty({p.N, p.nbest}, opts.dtype(at::kDouble));
  at::Tensor frames = at::empty({p.N, p.nbest, p.T}, opts);
  at::Tensor probs = at::empty({p.N, p.nbest, p.T}, opts.dtype(at::kFloat));
  p.input_lengths = lengths.data_ptr<int64_t>();
  p.tokens = tokens.data_ptr<int64_t>();
  p.lengths = out_lengths.data_ptr<int64_t>();
  p.log_probs_out = scores.data_ptr<double>();
  p.token_frames = frames.data_ptr<int64_t>();
  p.token_probs = probs.data_ptr<float>();
  run_cpu(p);
  return {tokens, out_lengths, scores, frames, probs};
}

BeamOutputs beam_search_cpu_op(const at::Tensor& log_probs, const at::Tensor& input_lengths,
                               int64_t blank, bool logits, int64_t beam_width, int64_t nbest,
                               int64_t max_tokens, std::optional<double> token_min_logp,
                               std::optional<double> beam_prune_logp) {
  TORCH_CHECK_VALUE(log_probs.dim() == 3, "log_probs must have shape (T, N, C), got ",
                    log_probs.sizes());
  BeamSearchParams p;
  p.dtype = kernel_dtype(log_probs, "log_probs");
  TORCH_CHECK_TYPE(p.dtype == Dtype::kFloat32 || p.dtype == Dtype::kFloat64,
                   "log_probs on the CPU must be float32 or float64, got ",
                   log_probs.scalar_type());
  check_search_options(log_probs.size(2), blank, beam_width, nbest, max_tokens, token_min_logp,
                       beam_prune_logp, p);
  p.scores = log_probs.data_ptr();
  p.T = log_probs.size(0);
  p.N = log_probs.size(1);
  p.stride_t = log_probs.stride(0);
  p.stride_n = log_probs.stride(1);
  p.stride_c = log_probs.stride(2);
  p.logits = logits;
  return allocate_and_run(input_lengths, p);
}

BeamOutputs beam_search_candidates_cpu_op(const at::Tensor& candidate_tokens,
                                          const at::Tensor& candidate_logp,
                                          const at::Tensor& blank_logp,
                                          const at::Tensor& input_lengths, int64_t num_classes,
                                          int64_t blank, int64_t beam_width, int64_t nbest,
                                          std::optional<double> token_min_logp,
                                          std::optional<double> beam_prune_logp) {
  TORCH_CHECK_VALUE(candidate_tokens.dim() == 3, "candidate_tokens must be (T, N, K), got ",
                    candidate_tokens.sizes());
  TORCH_CHECK_TYPE(candidate_tokens.scalar_type() == at::kLong,
                   "candidate_tokens must be int64, got ", candidate_tokens.scalar_type());
  TORCH_CHECK_TYPE(
      candidate_logp.scalar_type() == at::kDouble && blank_logp.scalar_type() == at::kDouble,
      "candidate_logp and blank_logp must be float64");
  TORCH_CHECK_VALUE(candidate_logp.sizes() == candidate_tokens.sizes(),
                    "candidate_logp must have candidate_tokens' shape ", candidate_tokens.sizes(),
                    ", got ", candidate_logp.sizes());
  const int64_t T = candidate_tokens.size(0), N = candidate_tokens.size(1);
  TORCH_CHECK_VALUE(blank_logp.sizes() == at::IntArrayRef({T, N}), "blank_logp must be (", T, ", ",
                    N, "), got ", blank_logp.sizes());
  BeamSearchParams p;
  p.dtype = Dtype::kFloat64;
  check_search_options(num_classes, blank, beam_width, nbest, /*max_tokens=*/0, token_min_logp,
                       beam_prune_logp, p);
  const at::Tensor tokens = candidate_tokens.contiguous();
  const at::Tensor logp = candidate_logp.contiguous();
  const at::Tensor blanks = blank_logp.contiguous();
  p.candidate_tokens = tokens.data_ptr<int64_t>();
  p.candidate_logp = logp.data_ptr<double>();
  p.blank_logp = blanks.data_ptr<double>();
  p.K = candidate_tokens.size(2);
  p.T = T;
  p.N = N;
  return allocate_and_run(input_lengths, p);
}

}  // namespace

TORCH_LIBRARY_IMPL(fastcrnn, CPU, m) {
  m.impl("ctc_beam_search", &beam_search_cpu_op);
  m.impl("ctc_beam_search_candidates", &beam_search_candidates_cpu_op);
}

}  // namespace fastcrnn::ops
