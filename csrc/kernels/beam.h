// CTC prefix beam search: launcher declarations shared by ops/ and kernels/. Torch-free.
//
// Each hypothesis is a label prefix with two log-probabilities: of the paths so far that end in
// a blank (p_b) and in its last label (p_nb). At frame t a prefix
//   stays by a blank:                 p_b'  += p_t(blank) * (p_b + p_nb)
//   stays by repeating its last label: p_nb' += p_t(last) * p_nb
//   grows by a label c:               p_nb'(prefix + c) += p_t(c) * (c == last ? p_b : p_b + p_nb)
// (in log space; += is log-add-exp), identical prefixes merging. The beam_width prefixes of
// highest p_b + p_nb survive each frame; ties go to the prefix that is lexicographically smaller
// as a sequence of class indices, so results are deterministic. fastcrnn.reference's
// ctc_prefix_beam_search is the readable specification, operation for operation.
//
// Pruning (all optional): each frame's candidate labels are its max_tokens (largest log-prob,
// ties to the smaller class) with log-prob >= token_min_logp; a label outside that set counts as
// probability 0 at that frame (for growing and for repeating alike; the blank is always in).
// After ranking, prefixes scoring below the best + beam_prune_logp are dropped.
//
// Lexicon (optional): a trie of token sequences. A prefix grows by a label only where the label
// continues a lexicon word from the prefix' trie node; with word_delimiter, the delimiter may
// follow a complete word and returns to the root. At the end only prefixes on a complete word
// remain (possibly none: the sample's result is then empty, score -inf).
// Hotwords (optional): a trie with Aho-Corasick failure links. Each prefix' score gains
// hotword_weight per token of its current partial match and keeps the bonus of every completed
// hotword; a partial match that fails gives its bonus back (see hot_step in beam_cpu.cpp and
// fastcrnn.reference.ctc_prefix_beam_search). At the end only completed hotwords count.
// The trie node of a prefix is a function of the prefix, so identical prefixes still merge.
#pragma once
#include <cstdint>

#include "kernels/common.h"
#include "kernels/cpu_isa.h"

namespace fastcrnn {

struct BeamSearchParams {
  // (T, N, C) log-probabilities, or logits when `logits` (each frame normalised in the kernel),
  // strides in elements, float32 or float64 (ops/ converts half precision).
  const void* scores = nullptr;
  Dtype dtype = Dtype::kFloat32;
  int64_t T = 0, N = 0, C = 0;
  int64_t stride_t = 0, stride_n = 0, stride_c = 0;
  bool logits = false;
  // Or, when candidate_tokens is set, each frame's candidates only (what a CUDA input sends to
  // the host after pruning on the device): K labels per (t, n) (-1: none) with their
  // log-probabilities, contiguous (T, N, K), and the blank's log-probability (T, N). scores is
  // then unused; labels outside a frame's candidates count as probability 0.
  const int64_t* candidate_tokens = nullptr;
  const double* candidate_logp = nullptr;
  const double* blank_logp = nullptr;
  int64_t K = 0;
  const int64_t* input_lengths = nullptr;  // (N,), each in [0, T] (checked by ops/)
  int64_t blank = 0;
  int64_t beam_width = 1;
  int64_t nbest = 1;          // <= beam_width
  int64_t max_tokens = 0;     // candidate labels per frame; 0: all
  double token_min_logp = 0;  // used when has_token_min_logp
  bool has_token_min_logp = false;
  double beam_prune_logp = 0;  // used when has_beam_prune_logp
  bool has_beam_prune_logp = false;
  // Optional language model (fastcrnn.lm.NGramArrays, float64), one LM token per label: a
  // prefix scores log(p_b + p_nb) + lm_weight * ln(10) * log10 p_LM(prefix) + word_bonus *
  // length, and the end of the input adds the LM's end of sentence. lm_keys == nullptr: none.
  const int64_t* lm_keys = nullptr;       // (R,)
  const double* lm_values = nullptr;      // (R, 2): log10 probability, log10 back-off
  const int64_t* lm_links = nullptr;      // (R, 2): suffix row, next state
  const int64_t* lm_token_ids = nullptr;  // (C,): each class's LM token id
  // Or a word-level model (lm_token_ids == nullptr): lm_word_ids (W,) holds the LM token id of
  // each lexicon word (a lexicon end node's column 2 is the word's index + 1). A word is scored
  // when it completes: when the word_delimiter follows it, and at the end of the input (then
  // the end of sentence too); word_bonus is added per word.
  const int64_t* lm_word_ids = nullptr;
  int64_t lm_word_count = 0;  // W
  int64_t lm_rows = 0, lm_vocab_size = 0, lm_begin_state = 0, lm_eos = 0;
  double lm_weight = 0, word_bonus = 0;
  // Token tries (fastcrnn.ops.beam.TokenTrie): nodes (V, 5) int64 rows (first edge, end of
  // edges, the index + 1 of the sequence ending there or 0, failure link, depth), node 0 the root;
  // edges (E, 2) int64 (token, child), sorted by token within a node. lexicon_nodes == nullptr: no
  // lexicon; hotword_nodes == nullptr: no hotwords. word_delimiter < 0: none.
  const int64_t* lexicon_nodes = nullptr;
  const int64_t* lexicon_edges = nullptr;
  int64_t word_delimiter = -1;
  const int64_t* hotword_nodes = nullptr;
  const int64_t* hotword_edges = nullptr;
  double hotword_weight = 0;
  // Outputs, padded: tokens / frames -1, probs 0, scores -inf where a sample has fewer than
  // nbest hypotheses.
  int64_t* tokens = nullptr;            // (N, nbest, T)
  int64_t* lengths = nullptr;           // (N, nbest)
  double* log_probs_out = nullptr;      // (N, nbest): the hypothesis' score (ranked by)
  double* ctc_log_probs_out = nullptr;  // (N, nbest): its CTC log-probability log(p_b + p_nb)
  int64_t* token_frames = nullptr;      // (N, nbest, T): the frame each token was first appended
  float* token_probs = nullptr;         // (N, nbest, T): its highest probability from that frame
                                        // until the next token's (or the input's end)
};

}  // namespace fastcrnn

FASTCRNN_DECLARE_CPU_KERNEL(void, ctc_beam_search_cpu, (const ::fastcrnn::BeamSearchParams& p))
