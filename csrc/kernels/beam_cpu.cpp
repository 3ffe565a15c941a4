// CTC prefix beam search on the CPU: samples in parallel (at::parallel_for), one hypothesis
// store per task reused across its samples and frames (no allocation per frame once warm).
// Prefixes live in a trie of the hypotheses that ever survived a frame: a hypothesis is a node,
// so extending or merging never copies a label sequence. Probabilities are accumulated in
// double, in the order of fastcrnn.reference.ctc_prefix_beam_search, so the two agree exactly.
// Compiled once per instruction set (see cpu_isa.h).
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <unordered_map>
#include <utility>
#include <vector>

#include "kernels/beam.h"

namespace fastcrnn::cpu::FASTCRNN_ISA_NS {
namespace {

constexpr double kNegInf = -std::numeric_limits<double>::infinity();
constexpr int64_t kTrieRow = 5;  // the columns of a trie's nodes (beam.h)

inline double log_add(double a, double b) {
  if (a == kNegInf) return b;
  if (b == kNegInf) return a;
  const double hi = a >= b ? a : b;
  const double lo = a >= b ? b : a;
  return hi + std::log1p(std::exp(lo - hi));
}

// Where a prefix stands in the lexicon and hotword tries (all 0 without them).
struct TrieState {
  int32_t lex;        // lexicon trie node
  int32_t hot;        // hotword trie node: the current partial match
  int32_t hot_done;   // depth of `hot` whose bonus is already committed (a completed hotword)
  double hot_banked;  // bonus of the completed hotwords
};

struct Node {
  int32_t parent;  // -1 for the root (the empty prefix)
  int32_t token;
  int32_t frame;  // where the token was first appended
  int32_t length;
  int64_t lm_state;  // the language model's state after the prefix (0 without a model)
  double lm_score;   // the prefix's language model term of the score (0 without a model)
  TrieState trie;
};

struct Hypothesis {
  int32_t node;
  double p_b, p_nb;
};

// A ranked candidate: an existing hypothesis (token < 0) or hypothesis `from` grown by token.
struct Candidate {
  int32_t from;  // index into the current beams
  int32_t token;
  double p_b, p_nb, total;  // total: log(p_b + p_nb)
  int64_t lm_state;
  double lm_score;
  TrieState trie;
  double rank;  // total + lm_score + the hotword bonus: what the beam keeps the best of
};

// Everything one task reuses across its samples.
struct Store {
  std::vector<Node> nodes;
  std::unordered_map<uint64_t, int32_t> child;  // (parent << 32 | token) -> node
  std::vector<int32_t> beam_of_node;            // current beam index of a node, or -1
  std::vector<Hypothesis> beams, next;
  std::vector<Candidate> candidates;
  std::vector<std::vector<std::pair<int32_t, int32_t>>> kids;  // per hypothesis: (label, index)
  std::vector<std::pair<int32_t, double>> labels;  // this frame's candidate labels, by class
  std::vector<double> log_norm;                    // (T,) each frame's log-sum-exp (logits)
  std::vector<int32_t> prefix_a, prefix_b;
  std::vector<double> final_scores;

  void reset() {
    nodes.clear();
    child.clear();
    beam_of_node.clear();
    nodes.push_back({-1, -1, -1, 0, 0, 0.0, {0, 0, 0, 0.0}});
    beam_of_node.push_back(-1);
    beams.assign(1, {0, 0.0, kNegInf});
  }

  void prefix(int32_t node, std::vector<int32_t>& out) const {
    out.resize(nodes[node].length);
    for (int32_t i = nodes[node].length - 1; i >= 0; --i, node = nodes[node].parent)
      out[i] = nodes[node].token;
  }
};

template <typename scalar_t>
class Searcher {
 public:
  Searcher(const BeamSearchParams& p, Store& st) : p_(p), st_(st) {}

  void run(int64_t n) {
    const int64_t Tn = p_.input_lengths[n];
    st_.reset();
    st_.nodes[0].lm_state = p_.lm_begin_state;
    st_.log_norm.assign(p_.T, 0.0);
    for (int64_t t = 0; t < Tn && !st_.beams.empty(); ++t) {
      const double blank_lp = load_frame(n, t);
      grow(blank_lp);
      select(static_cast<int32_t>(t));
    }
    write(n, Tn);
  }

 private:
  // Fills st_.labels (this frame's candidate labels, by class); returns the blank's log-prob.
  double load_frame(int64_t n, int64_t t) {
    auto& labels = st_.labels;
    labels.clear();
    double blank_lp;
    if (p_.candidate_tokens != nullptr) {
      const int64_t base = (t * p_.N + n) * p_.K;
      for (int64_t k = 0; k < p_.K; ++k) {
        const int64_t c = p_.candidate_tokens[base + k];
        const double v = p_.candidate_logp[base + k];
        if (c >= 0 && c < p_.C && c != p_.blank && keep(v)) offer(static_cast<int32_t>(c), v);
      }
      blank_lp = p_.blank_logp[t * p_.N + n];
    } else {
      const scalar_t* x = row_of(n, t);
      double lse = 0;
      if (p_.logits) {
        double m = kNegInf;
        for (int64_t c = 0; c < p_.C; ++c) m = std::max(m, static_cast<double>(x[c * p_.stride_c]));
        double sum = 0;
        for (int64_t c = 0; c < p_.C; ++c)
          sum += std::exp(static_cast<double>(x[c * p_.stride_c]) - m);
        lse = m + std::log(sum);
      }
      st_.log_norm[t] = lse;
      for (int64_t c = 0; c < p_.C; ++c) {
        const double v = static_cast<double>(x[c * p_.stride_c]) - lse;
        if (c != p_.blank && keep(v)) offer(static_cast<int32_t>(c), v);
      }
      blank_lp = static_cast<double>(x[p_.blank * p_.stride_c]) - lse;
    }
    std::sort(labels.begin(), labels.end());
    return blank_lp;
  }

  // Ordering of candidate labels for max_tokens: the larger log-prob, then the smaller class.
  static bool larger(const std::pair<int32_t, double>& a, const std::pair<int32_t, double>& b) {
    return a.second > b.second || (a.second == b.second && a.first < b.first);
  }

  // Adds a candidate label; with max_tokens, st_.labels is a heap of the max_tokens largest
  // so far (its front the smallest of them), so a frame of C classes costs one pass.
  void offer(int32_t c, double v) {
    auto& labels = st_.labels;
    if (p_.max_tokens <= 0 || static_cast<int64_t>(labels.size()) < p_.max_tokens) {
      labels.emplace_back(c, v);
      if (p_.max_tokens > 0) std::push_heap(labels.begin(), labels.end(), larger);
    } else if (larger({c, v}, labels.front())) {
      std::pop_heap(labels.begin(), labels.end(), larger);
      labels.back() = {c, v};
      std::push_heap(labels.begin(), labels.end(), larger);
    }
  }

  bool keep(double v) const {
    return v > kNegInf && (!p_.has_token_min_logp || v >= p_.token_min_logp);
  }

  const scalar_t* row_of(int64_t n, int64_t t) const {
    return static_cast<const scalar_t*>(p_.scores) + t * p_.stride_t + n * p_.stride_n;
  }

  double label_logp(int32_t c) const {
    const auto& labels = st_.labels;
    const auto it = std::lower_bound(labels.begin(), labels.end(), std::make_pair(c, kNegInf));
    return it != labels.end() && it->first == c ? it->second : kNegInf;
  }

  // The accumulation of one frame, in the reference's order: hypotheses by rank; for each, the
  // blank, the repeat, then the labels by class.
  void grow(double blank_lp) {
    auto& beams = st_.beams;
    auto& cand = st_.candidates;
    auto& kids = st_.kids;
    cand.clear();
    for (size_t i = 0; i < beams.size(); ++i) {
      st_.beam_of_node[beams[i].node] = static_cast<int32_t>(i);
      const Node& node = st_.nodes[beams[i].node];
      cand.push_back({static_cast<int32_t>(i), -1, kNegInf, kNegInf, 0, node.lm_state,
                      node.lm_score, node.trie, 0});
    }
    // each hypothesis' children among the hypotheses, by label: growing a prefix into one of
    // them merges into it (the trie holds one node per prefix, so this is exact)
    if (kids.size() < beams.size()) kids.resize(beams.size());
    for (size_t i = 0; i < beams.size(); ++i) kids[i].clear();
    for (size_t i = 0; i < beams.size(); ++i) {
      const Node& node = st_.nodes[beams[i].node];
      if (node.parent >= 0 && st_.beam_of_node[node.parent] >= 0)
        kids[st_.beam_of_node[node.parent]].emplace_back(node.token, static_cast<int32_t>(i));
    }
    for (size_t i = 0; i < beams.size(); ++i) {
      std::sort(kids[i].begin(), kids[i].end());
      const Hypothesis h = beams[i];
      const Node node = st_.nodes[h.node];
      const double total = log_add(h.p_b, h.p_nb);
      cand[i].p_b = log_add(cand[i].p_b, total + blank_lp);
      if (node.length > 0) cand[i].p_nb = log_add(cand[i].p_nb, h.p_nb + label_logp(node.token));
      size_t k = 0;
      for (const auto& [c, v] : st_.labels) {
        const double source = node.length > 0 && c == node.token ? h.p_b : total;
        const double value = source + v;
        while (k < kids[i].size() && kids[i][k].first < c) ++k;
        if (k < kids[i].size() && kids[i][k].first == c) {
          cand[kids[i][k].second].p_nb = log_add(cand[kids[i][k].second].p_nb, value);
        } else {
          TrieState trie = node.trie;
          if (!trie_advance(trie, c)) continue;  // leaves the lexicon
          int64_t state = node.lm_state;
          double lm = node.lm_score;
          if (p_.lm_token_ids != nullptr) {
            lm += to_ln_ * lm_advance(state, p_.lm_token_ids[c]) + p_.word_bonus;
          } else if (p_.lm_word_ids != nullptr && c == p_.word_delimiter) {
            lm += to_ln_ * lm_advance(state, word_id(node.trie.lex)) + p_.word_bonus;
          }
          cand.push_back({static_cast<int32_t>(i), c, kNegInf, value, 0, state, lm, trie, 0});
        }
      }
    }
    for (const Hypothesis& h : beams) st_.beam_of_node[h.node] = -1;
  }

  void select(int32_t t) {
    auto& cand = st_.candidates;
    size_t kept = 0;
    for (Candidate& c : cand) {
      c.total = log_add(c.p_b, c.p_nb);
      c.rank = c.total + c.lm_score + hot_bonus(c.trie);
      if (c.total > kNegInf) cand[kept++] = c;  // drops impossible (and NaN) hypotheses
    }
    cand.resize(kept);
    const size_t width = std::min<size_t>(cand.size(), static_cast<size_t>(p_.beam_width));
    const auto better = [this](const Candidate& a, const Candidate& b) {
      if (a.rank != b.rank) return a.rank > b.rank;
      return prefix_less(a, b);
    };
    std::partial_sort(cand.begin(), cand.begin() + width, cand.end(), better);
    cand.resize(width);
    if (p_.has_beam_prune_logp && !cand.empty()) {
      const double floor = cand.front().rank + p_.beam_prune_logp;
      while (!cand.empty() && cand.back().rank < floor) cand.pop_back();
    }
    auto& next = st_.next;
    next.clear();
    for (const Candidate& c : cand) {
      const int32_t from = st_.beams[c.from].node;
      int32_t node = from;
      if (c.token >= 0) {
        // one node per distinct prefix: a prefix that left the beam and returns gets its old
        // node back (live descendants may hang below it), with the frame of its return
        const auto [it, added] =
            st_.child.try_emplace(key(from, c.token), static_cast<int32_t>(st_.nodes.size()));
        node = it->second;
        if (added) {
          st_.nodes.push_back(
              {from, c.token, t, st_.nodes[from].length + 1, c.lm_state, c.lm_score, c.trie});
          st_.beam_of_node.push_back(-1);
        } else {
          st_.nodes[node].frame = t;
        }
      }
      next.push_back({node, c.p_b, c.p_nb});
    }
    std::swap(st_.beams, next);
  }

  // Ties of equal score: the smaller label sequence first (only then are prefixes compared).
  bool prefix_less(const Candidate& a, const Candidate& b) {
    st_.prefix(st_.beams[a.from].node, st_.prefix_a);
    st_.prefix(st_.beams[b.from].node, st_.prefix_b);
    if (a.token >= 0) st_.prefix_a.push_back(a.token);
    if (b.token >= 0) st_.prefix_b.push_back(b.token);
    return st_.prefix_a < st_.prefix_b;
  }

  // log10 p_LM(token | state) by the back-off rule (fastcrnn.lm.NGramArrays.advance); moves
  // state on. Runs at most order times: at state 0 every token's unigram is found.
  double lm_advance(int64_t& state, int64_t token) const {
    const int64_t* first = p_.lm_keys + 1;
    const int64_t* last = p_.lm_keys + p_.lm_rows;
    double acc = 0;
    for (int64_t s = state;;) {
      const int64_t want = s * p_.lm_vocab_size + token;
      const int64_t* it = std::lower_bound(first, last, want);
      if (it != last && *it == want) {
        const int64_t row = it - p_.lm_keys;
        state = p_.lm_links[2 * row + 1];
        return acc + p_.lm_values[2 * row];
      }
      if (s == 0) return -std::numeric_limits<double>::infinity();  // not in the vocabulary
      acc += p_.lm_values[2 * s + 1];
      s = p_.lm_links[2 * s];
    }
  }

  // The child of trie node `node` by `token` (edges sorted by token within a node), or -1.
  static int32_t trie_child(const int64_t* nodes, const int64_t* edges, int32_t node,
                            int64_t token) {
    int64_t lo = nodes[kTrieRow * node], hi = nodes[kTrieRow * node + 1];
    while (lo < hi) {
      const int64_t mid = lo + (hi - lo) / 2;
      if (edges[2 * mid] < token)
        lo = mid + 1;
      else
        hi = mid;
    }
    return lo < nodes[kTrieRow * node + 1] && edges[2 * lo] == token
               ? static_cast<int32_t>(edges[2 * lo + 1])
               : -1;
  }

  // Moves a prefix's trie state on by label c; false where the lexicon forbids c.
  bool trie_advance(TrieState& s, int32_t c) const {
    if (p_.lexicon_nodes != nullptr) {
      if (c == p_.word_delimiter) {
        if (p_.lexicon_nodes[kTrieRow * s.lex + 2] == 0) return false;  // inside a word
        s.lex = 0;
      } else {
        s.lex = trie_child(p_.lexicon_nodes, p_.lexicon_edges, s.lex, c);
        if (s.lex < 0) return false;
      }
    }
    if (p_.hotword_nodes != nullptr) hot_step(s, c);
    return true;
  }

  // The hotword matcher (fastcrnn.reference's _hotword_step is the readable version). A match
  // that continues goes down the trie. One that fails falls back along the failure links to the
  // longest suffix still inside some hotword, unless it already completed a hotword: then the
  // completed tokens stay banked and matching restarts at c. Reaching a hotword's end banks its
  // tokens not banked yet; a leaf restarts at the root.
  void hot_step(TrieState& s, int32_t c) const {
    const int64_t* nodes = p_.hotword_nodes;
    const int64_t* edges = p_.hotword_edges;
    int32_t next = trie_child(nodes, edges, s.hot, c);
    if (next < 0) {
      int32_t from = 0;
      if (s.hot_done == 0) {
        // failure links strictly shorten the match (checked by ops/), so this ends at the root
        for (from = s.hot; from != 0 && next < 0;) {
          from = static_cast<int32_t>(nodes[kTrieRow * from + 3]);
          next = trie_child(nodes, edges, from, c);
        }
      }
      s.hot_done = 0;
      if (next < 0) next = std::max(trie_child(nodes, edges, 0, c), 0);
    }
    s.hot = next;
    const int64_t* row = nodes + kTrieRow * next;
    if (row[2] != 0) {
      s.hot_banked += p_.hotword_weight * static_cast<double>(row[4] - s.hot_done);
      s.hot_done = static_cast<int32_t>(row[4]);
      if (row[0] == row[1]) s.hot = s.hot_done = 0;
    }
  }

  // The LM token id of the lexicon word ending at trie node `lex` (a word's end: checked by
  // the callers' lexicon rules).
  int64_t word_id(int32_t lex) const {
    return p_.lm_word_ids[p_.lexicon_nodes[kTrieRow * lex + 2] - 1];
  }

  // The hotword part of a prefix's score while searching: the banked bonus and the partial
  // match's tokens not banked yet.
  double hot_bonus(const TrieState& s) const {
    if (p_.hotword_nodes == nullptr) return 0;
    return s.hot_banked +
           p_.hotword_weight *
               static_cast<double>(p_.hotword_nodes[kTrieRow * s.hot + 4] - s.hot_done);
  }

  static uint64_t key(int32_t parent, int32_t token) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(parent)) << 32) |
           static_cast<uint32_t>(token);
  }

  // The probability of label c at frame t (0 outside a candidate-only frame's candidates).
  double prob_at(int64_t n, int64_t t, int32_t c) {
    if (p_.candidate_tokens != nullptr) {
      const int64_t base = (t * p_.N + n) * p_.K;
      for (int64_t k = 0; k < p_.K; ++k)
        if (p_.candidate_tokens[base + k] == c) return std::exp(p_.candidate_logp[base + k]);
      return 0.0;
    }
    return std::exp(static_cast<double>(row_of(n, t)[c * p_.stride_c]) - st_.log_norm[t]);
  }

  // The final order: the score with the language model's end of sentence and the completed
  // hotwords' bonus (a partial match at the end gives its bonus back); with a lexicon, only the
  // prefixes that end on a whole word.
  void rank_final() {
    auto& beams = st_.beams;
    if (p_.lexicon_nodes != nullptr) {
      size_t kept = 0;
      for (const Hypothesis& h : beams)
        if (p_.lexicon_nodes[kTrieRow * st_.nodes[h.node].trie.lex + 2] != 0) beams[kept++] = h;
      beams.resize(kept);
    }
    auto& final = st_.final_scores;
    final.resize(beams.size());
    for (size_t i = 0; i < beams.size(); ++i) {
      const Node& node = st_.nodes[beams[i].node];
      double end = 0;
      if (p_.lm_keys != nullptr) {
        int64_t state = node.lm_state;
        // a word-level model scores the last word (whole: the lexicon filter above) first
        if (p_.lm_word_ids != nullptr)
          end = to_ln_ * lm_advance(state, word_id(node.trie.lex)) + p_.word_bonus;
        end += to_ln_ * lm_advance(state, p_.lm_eos);
      }
      const double hot = p_.hotword_nodes != nullptr ? node.trie.hot_banked : 0.0;
      final[i] = log_add(beams[i].p_b, beams[i].p_nb) + node.lm_score + end + hot;
    }
    // without a model or hotwords the final score is the rank: the beams are ranked already
    if (p_.lm_keys == nullptr && p_.hotword_nodes == nullptr) return;
    std::vector<size_t> order(beams.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
      if (final[a] != final[b]) return final[a] > final[b];
      st_.prefix(beams[a].node, st_.prefix_a);
      st_.prefix(beams[b].node, st_.prefix_b);
      return st_.prefix_a < st_.prefix_b;
    });
    std::vector<Hypothesis> sorted;
    std::vector<double> scores;
    for (size_t i : order) {
      sorted.push_back(beams[i]);
      scores.push_back(final[i]);
    }
    beams.swap(sorted);
    final.swap(scores);
  }

  void write(int64_t n, int64_t Tn) {
    rank_final();
    const int64_t T = p_.T;
    for (int64_t k = 0; k < p_.nbest; ++k) {
      const int64_t slot = n * p_.nbest + k;
      int64_t* tokens = p_.tokens + slot * T;
      int64_t* frames = p_.token_frames + slot * T;
      float* probs = p_.token_probs + slot * T;
      std::fill(tokens, tokens + T, -1);
      std::fill(frames, frames + T, -1);
      std::fill(probs, probs + T, 0.f);
      if (k >= static_cast<int64_t>(st_.beams.size())) {
        p_.lengths[slot] = 0;
        p_.log_probs_out[slot] = kNegInf;
        p_.ctc_log_probs_out[slot] = kNegInf;
        continue;
      }
      const Hypothesis& h = st_.beams[k];
      const int32_t L = st_.nodes[h.node].length;
      p_.lengths[slot] = L;
      p_.log_probs_out[slot] = st_.final_scores[k];
      p_.ctc_log_probs_out[slot] = log_add(h.p_b, h.p_nb);
      for (int32_t node = h.node, i = L - 1; i >= 0; node = st_.nodes[node].parent, --i) {
        tokens[i] = st_.nodes[node].token;
        frames[i] = st_.nodes[node].frame;
      }
      for (int32_t i = 0; i < L; ++i) {
        const int64_t until = i + 1 < L ? frames[i + 1] : Tn;
        double best = 0;
        for (int64_t t = frames[i]; t < until; ++t)
          best = std::max(best, prob_at(n, t, static_cast<int32_t>(tokens[i])));
        probs[i] = static_cast<float>(best);
      }
    }
  }

  const BeamSearchParams& p_;
  Store& st_;
  const double to_ln_ = p_.lm_weight * std::log(10.0);
};

}  // namespace

void ctc_beam_search_cpu(const BeamSearchParams& p) {
  at::parallel_for(0, p.N, 1, [&](int64_t begin, int64_t end) {
    Store store;
    for (int64_t n = begin; n < end; ++n) {
      if (p.dtype == Dtype::kFloat64)
        Searcher<double>(p, store).run(n);
      else
        Searcher<float>(p, store).run(n);
    }
  });
}

}  // namespace fastcrnn::cpu::FASTCRNN_ISA_NS
