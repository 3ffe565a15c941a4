// CTC prefix beam search: argument checks, output allocation and the CPU registrations. The
// search runs on the host; a CUDA input is pruned on the device first (fastcrnn/ops/beam.py)
// and reaches ctc_beam_search_candidates as each frame's candidates only.
#include <torch/library.h>

#include <cmath>
#include <optional>
#include <tuple>
#include <utility>

#include "kernels/beam.h"
#include "ops/common.h"

namespace fastcrnn::ops {
namespace {

using BeamOutputs =
    std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

// The language model's arrays (fastcrnn.lm.NGramArrays), checked and pointed to; kept alive by
// the caller's tensors for the call.
void set_language_model(const std::optional<at::Tensor>& keys,
                        const std::optional<at::Tensor>& values,
                        const std::optional<at::Tensor>& links,
                        const std::optional<at::Tensor>& token_ids,
                        const std::optional<at::Tensor>& word_ids, int64_t vocab_size,
                        int64_t begin_state, int64_t eos, double weight, double word_bonus,
                        BeamSearchParams& p) {
  if (!keys.has_value()) {
    TORCH_CHECK_VALUE(!values.has_value() && !links.has_value() && !token_ids.has_value() &&
                          !word_ids.has_value(),
                      "lm_keys, lm_values, lm_links and lm_token_ids (or lm_word_ids) go together");
    return;
  }
  TORCH_CHECK_VALUE(
      values.has_value() && links.has_value() && token_ids.has_value() != word_ids.has_value(),
      "lm_keys, lm_values, lm_links and lm_token_ids (or lm_word_ids) go together");
  const int64_t R = keys->numel();
  TORCH_CHECK_VALUE(R >= 2 && keys->dim() == 1 && keys->scalar_type() == at::kLong &&
                        keys->is_contiguous() && keys->is_cpu(),
                    "lm_keys must be a contiguous 1-D int64 CPU tensor of >= 2 rows");
  TORCH_CHECK_VALUE(values->sizes() == at::IntArrayRef({R, 2}) &&
                        values->scalar_type() == at::kDouble && values->is_contiguous(),
                    "lm_values must be a contiguous (R, 2) float64 tensor");
  TORCH_CHECK_VALUE(links->sizes() == at::IntArrayRef({R, 2}) &&
                        links->scalar_type() == at::kLong && links->is_contiguous(),
                    "lm_links must be a contiguous (R, 2) int64 tensor");
  TORCH_CHECK_VALUE(vocab_size >= 1 && vocab_size < R, "lm_vocab_size must be in [1, R)");
  TORCH_CHECK_VALUE(begin_state >= 0 && begin_state < R, "lm_begin_state out of range");
  TORCH_CHECK_VALUE(eos >= 0 && eos < vocab_size, "lm_eos out of range");
  // one LM token per class, or (a word-level model) per lexicon word
  const at::Tensor& per = token_ids.has_value() ? *token_ids : *word_ids;
  const char* per_name = token_ids.has_value() ? "lm_token_ids" : "lm_word_ids";
  TORCH_CHECK_VALUE(per.dim() == 1 && (word_ids.has_value() || per.size(0) == p.C) &&
                        per.scalar_type() == at::kLong && per.is_contiguous() && per.is_cpu(),
                    per_name, " must be a contiguous 1-D int64 CPU tensor (lm_token_ids: (C,))");
  const int64_t* ids = per.data_ptr<int64_t>();
  for (int64_t i = 0; i < per.numel(); ++i)
    TORCH_CHECK_VALUE(ids[i] >= 0 && ids[i] < vocab_size, per_name, "[", i,
                      "] must be a token id in [0, ", vocab_size, "), got ", ids[i]);
  // the links must stay inside the table: a corrupt one would send the lookup astray
  const at::Tensor in_range = links->ge(-1).logical_and(links->lt(R)).all();
  TORCH_CHECK_VALUE(in_range.item<bool>(), "lm_links must hold rows in [-1, R)");
  p.lm_keys = keys->data_ptr<int64_t>();
  p.lm_values = values->data_ptr<double>();
  p.lm_links = links->data_ptr<int64_t>();
  p.lm_token_ids = token_ids.has_value() ? ids : nullptr;
  p.lm_word_ids = word_ids.has_value() ? ids : nullptr;
  p.lm_word_count = per.numel();
  p.lm_rows = R;
  p.lm_vocab_size = vocab_size;
  p.lm_begin_state = begin_state;
  p.lm_eos = eos;
  p.lm_weight = weight;
  p.word_bonus = word_bonus;
}

// A token trie (fastcrnn.ops.beam.TokenTrie), checked so that the search never leaves it: every
// edge's token a label in [0, C) other than the blank, every child a node one level deeper,
// edges sorted within a node, failure links to strictly shallower nodes (so following them
// ends at the root). Returns its (nodes, edges) pointers, or nullptrs without one.
std::pair<const int64_t*, const int64_t*> checked_trie(const std::optional<at::Tensor>& nodes,
                                                       const std::optional<at::Tensor>& edges,
                                                       const char* name,
                                                       const BeamSearchParams& p) {
  if (!nodes.has_value()) {
    TORCH_CHECK_VALUE(!edges.has_value(), name, "_nodes and ", name, "_edges go together");
    return {nullptr, nullptr};
  }
  TORCH_CHECK_VALUE(edges.has_value(), name, "_nodes and ", name, "_edges go together");
  TORCH_CHECK_VALUE(nodes->dim() == 2 && nodes->size(0) >= 1 && nodes->size(1) == 5 &&
                        nodes->scalar_type() == at::kLong && nodes->is_contiguous() &&
                        nodes->is_cpu(),
                    name, "_nodes must be a contiguous (V >= 1, 5) int64 CPU tensor");
  TORCH_CHECK_VALUE(edges->dim() == 2 && edges->size(1) == 2 && edges->scalar_type() == at::kLong &&
                        edges->is_contiguous() && edges->is_cpu(),
                    name, "_edges must be a contiguous (E, 2) int64 CPU tensor");
  const int64_t V = nodes->size(0), E = edges->size(0);
  TORCH_CHECK_VALUE(V < (int64_t(1) << 31), name, ": too many trie nodes");
  const int64_t* nd = nodes->data_ptr<int64_t>();
  const int64_t* ed = edges->data_ptr<int64_t>();
  TORCH_CHECK_VALUE(nd[3] == 0 && nd[4] == 0, name,
                    ": the root's failure link and depth must be 0");
  for (int64_t v = 0; v < V; ++v) {
    const int64_t* row = nd + 5 * v;
    TORCH_CHECK_VALUE(row[0] >= 0 && row[0] <= row[1] && row[1] <= E, name, ": node ", v,
                      "'s edges lie outside [0, E)");
    TORCH_CHECK_VALUE(row[3] >= 0 && row[3] < V && (v == 0 || nd[5 * row[3] + 4] < row[4]), name,
                      ": node ", v, "'s failure link must lead to a shallower node");
    for (int64_t e = row[0]; e < row[1]; ++e) {
      const int64_t token = ed[2 * e], child = ed[2 * e + 1];
      TORCH_CHECK_VALUE(token >= 0 && token < p.C && token != p.blank, name, " holds token id ",
                        token, ", which must be a class in [0, C=", p.C, ") other than the blank (",
                        p.blank, ")");
      TORCH_CHECK_VALUE(e == row[0] || ed[2 * e - 2] < token, name, ": node ", v,
                        "'s edges must be sorted by token, without repeats");
      TORCH_CHECK_VALUE(child >= 1 && child < V && nd[5 * child + 4] == row[4] + 1, name, ": node ",
                        v, " has an edge to ", child, ", not a node one level deeper");
    }
  }
  return {nd, ed};
}

// The lexicon and the hotwords, checked and pointed to (kept alive by the caller's tensors).
void set_tries(const std::optional<at::Tensor>& lexicon_nodes,
               const std::optional<at::Tensor>& lexicon_edges, int64_t word_delimiter,
               const std::optional<at::Tensor>& hotword_nodes,
               const std::optional<at::Tensor>& hotword_edges, double hotword_weight,
               BeamSearchParams& p) {
  std::tie(p.lexicon_nodes, p.lexicon_edges) =
      checked_trie(lexicon_nodes, lexicon_edges, "lexicon", p);
  std::tie(p.hotword_nodes, p.hotword_edges) =
      checked_trie(hotword_nodes, hotword_edges, "hotword", p);
  if (p.lm_word_ids != nullptr) {
    // a word-level model reads each whole word's index from its lexicon end node
    TORCH_CHECK_VALUE(p.lexicon_nodes != nullptr, "lm_word_ids needs a lexicon");
    const int64_t V = lexicon_nodes->size(0);
    for (int64_t v = 0; v < V; ++v)
      TORCH_CHECK_VALUE(
          p.lexicon_nodes[5 * v + 2] >= 0 && p.lexicon_nodes[5 * v + 2] <= p.lm_word_count,
          "lexicon_nodes: node ", v, " ends word ", p.lexicon_nodes[5 * v + 2] - 1,
          ", outside lm_word_ids (", p.lm_word_count, " words)");
  }
  if (word_delimiter >= 0) {
    TORCH_CHECK_VALUE(p.lexicon_nodes != nullptr, "word_delimiter needs a lexicon");
    TORCH_CHECK_VALUE(word_delimiter < p.C && word_delimiter != p.blank,
                      "word_delimiter must be a class in [0, C=", p.C, ") other than the blank (",
                      p.blank, "), got ", word_delimiter);
    const int64_t E = lexicon_edges->size(0);
    for (int64_t e = 0; e < E; ++e)
      TORCH_CHECK_VALUE(p.lexicon_edges[2 * e] != word_delimiter, "word_delimiter (",
                        word_delimiter, ") must not occur inside a lexicon word");
  }
  TORCH_CHECK_VALUE(std::isfinite(hotword_weight), "hotword_weight must be finite, got ",
                    hotword_weight);
  p.word_delimiter = word_delimiter < 0 ? -1 : word_delimiter;
  p.hotword_weight = hotword_weight;
}

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
  at::Tensor ctc_scores = at::empty({p.N, p.nbest}, opts.dtype(at::kDouble));
  at::Tensor frames = at::empty({p.N, p.nbest, p.T}, opts);
  at::Tensor probs = at::empty({p.N, p.nbest, p.T}, opts.dtype(at::kFloat));
  p.input_lengths = lengths.data_ptr<int64_t>();
  p.tokens = tokens.data_ptr<int64_t>();
  p.lengths = out_lengths.data_ptr<int64_t>();
  p.log_probs_out = scores.data_ptr<double>();
  p.ctc_log_probs_out = ctc_scores.data_ptr<double>();
  p.token_frames = frames.data_ptr<int64_t>();
  p.token_probs = probs.data_ptr<float>();
  run_cpu(p);
  return {tokens, out_lengths, scores, ctc_scores, frames, probs};
}

BeamOutputs beam_search_cpu_op(
    const at::Tensor& log_probs, const at::Tensor& input_lengths, int64_t blank, bool logits,
    int64_t beam_width, int64_t nbest, int64_t max_tokens, std::optional<double> token_min_logp,
    std::optional<double> beam_prune_logp, std::optional<at::Tensor> lm_keys,
    std::optional<at::Tensor> lm_values, std::optional<at::Tensor> lm_links,
    std::optional<at::Tensor> lm_token_ids, int64_t lm_vocab_size, int64_t lm_begin_state,
    int64_t lm_eos, double lm_weight, double word_bonus, std::optional<at::Tensor> lexicon_nodes,
    std::optional<at::Tensor> lexicon_edges, int64_t word_delimiter,
    std::optional<at::Tensor> hotword_nodes, std::optional<at::Tensor> hotword_edges,
    double hotword_weight, std::optional<at::Tensor> lm_word_ids) {
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
  set_language_model(lm_keys, lm_values, lm_links, lm_token_ids, lm_word_ids, lm_vocab_size,
                     lm_begin_state, lm_eos, lm_weight, word_bonus, p);
  set_tries(lexicon_nodes, lexicon_edges, word_delimiter, hotword_nodes, hotword_edges,
            hotword_weight, p);
  return allocate_and_run(input_lengths, p);
}

BeamOutputs beam_search_candidates_cpu_op(
    const at::Tensor& candidate_tokens, const at::Tensor& candidate_logp,
    const at::Tensor& blank_logp, const at::Tensor& input_lengths, int64_t num_classes,
    int64_t blank, int64_t beam_width, int64_t nbest, std::optional<double> token_min_logp,
    std::optional<double> beam_prune_logp, std::optional<at::Tensor> lm_keys,
    std::optional<at::Tensor> lm_values, std::optional<at::Tensor> lm_links,
    std::optional<at::Tensor> lm_token_ids, int64_t lm_vocab_size, int64_t lm_begin_state,
    int64_t lm_eos, double lm_weight, double word_bonus, std::optional<at::Tensor> lexicon_nodes,
    std::optional<at::Tensor> lexicon_edges, int64_t word_delimiter,
    std::optional<at::Tensor> hotword_nodes, std::optional<at::Tensor> hotword_edges,
    double hotword_weight, std::optional<at::Tensor> lm_word_ids) {
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
  if (tokens.size(2) > 1) {
    // a prefix grows once per class and frame: a class listed twice would grow it twice
    const at::Tensor sorted = std::get<0>(tokens.sort(-1));
    const int64_t K = tokens.size(2);
    const at::Tensor later = sorted.narrow(2, 1, K - 1);
    TORCH_CHECK_VALUE(
        !later.eq(sorted.narrow(2, 0, K - 1)).logical_and(later.ge(0)).any().item<bool>(),
        "candidate_tokens must list each class at most once per frame");
  }
  const at::Tensor logp = candidate_logp.contiguous();
  const at::Tensor blanks = blank_logp.contiguous();
  p.candidate_tokens = tokens.data_ptr<int64_t>();
  p.candidate_logp = logp.data_ptr<double>();
  p.blank_logp = blanks.data_ptr<double>();
  p.K = candidate_tokens.size(2);
  p.T = T;
  p.N = N;
  set_language_model(lm_keys, lm_values, lm_links, lm_token_ids, lm_word_ids, lm_vocab_size,
                     lm_begin_state, lm_eos, lm_weight, word_bonus, p);
  set_tries(lexicon_nodes, lexicon_edges, word_delimiter, hotword_nodes, hotword_edges,
            hotword_weight, p);
  return allocate_and_run(input_lengths, p);
}

}  // namespace

TORCH_LIBRARY_IMPL(fastcrnn, CPU, m) {
  m.impl("ctc_beam_search", &beam_search_cpu_op);
  m.impl("ctc_beam_search_candidates", &beam_search_candidates_cpu_op);
}

}  // namespace fastcrnn::ops
