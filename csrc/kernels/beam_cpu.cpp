// CTC prefix beam search on the CPU: samples in parallel (at::parallel_for), one hypothesis
// store per task reused across its samples and frames (no allocation per frame once warm).
// Prefixes live in a trie of the hypotheses that ever survived a frame: a hypothesis is a node,
// so extending or merging never copies a label sequence. Probabilities are accumulated in
// double, in the order of fastcrnn.reference.ctc_prefix_beam_search, so the two agree exactly.
// Compiled once per instruction set (see cpu_isa.h). One file past 400 lines on purpose: loading
// a frame, growing the prefixes, selecting the beam and the lexicon / LM / hotword steps all
// share the Searcher's per-frame state.
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
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
  double total;  // log(p_b + p_nb), as its candidate computed it
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
  std::vector<std::pair<int32_t, double>> labels;              // this frame's candidate labels
  // with max_tokens, once known: the worst of max_tokens labels already offered, which a label
  // must beat to be offered (Larger's order)
  std::pair<int32_t, double> label_floor;
  std::vector<double> label_logp;  // (C,) this frame's log-prob per class, -inf outside labels
  std::vector<double> floor_heap;  // the beam_width best ranks offered so far (a min-heap)
  std::vector<double> log_norm;    // (T,) each frame's log-sum-exp (logits)
  std::vector<int32_t> prefix_a, prefix_b;
  std::vector<double> final_scores;

  void reset() {
    nodes.clear();
    child.clear();
    beam_of_node.clear();
    nodes.push_back({-1, -1, -1, 0, 0, 0.0, {0, 0, 0, 0.0}});
    beam_of_node.push_back(-1);
    beams.assign(1, {0, 0.0, kNegInf, 0.0});
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
    st_.labels.clear();
    st_.label_logp.assign(p_.C, kNegInf);
    for (int64_t t = 0; t < Tn && !st_.beams.empty(); ++t) {
      const double blank_lp = load_frame(n, t);
      grow(blank_lp);
      select(static_cast<int32_t>(t));
    }
    write(n, Tn);
  }

 private:
  // Fills st_.labels and st_.label_logp with this frame's candidate labels; returns the blank's
  // log-prob.
  double load_frame(int64_t n, int64_t t) {
    auto& labels = st_.labels;
    for (const auto& label : labels) st_.label_logp[label.first] = kNegInf;
    labels.clear();
    st_.label_floor = {-1, kNegInf};
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
      offer_row(x, lse);
      blank_lp = static_cast<double>(x[p_.blank * p_.stride_c]) - lse;
    }
    if (p_.max_tokens > 0 && static_cast<int64_t>(labels.size()) > p_.max_tokens) compact();
    for (const auto& [c, v] : labels) st_.label_logp[c] = v;
    return blank_lp;
  }

  // Offers every non-blank class of a dense row. With max_tokens, the row is first cut into
  // blocks of kBlock classes and each block's largest value taken: the max_tokens + 1 largest
  // of those are distinct classes (one may be the blank), so the max_tokens best labels are
  // all at least the (max_tokens + 1)-th largest block maximum, and only the blocks reaching
  // it are offered class by class. A wide row with a few peaks costs one cheap pass.
  void offer_row(const scalar_t* x, double lse) {
    const int64_t C = p_.C, stride = p_.stride_c;
    const int64_t blocks = stride == 1 ? C / kBlock : 0;  // the tail is always offered
    double floor = p_.has_token_min_logp ? p_.token_min_logp : kNegInf;
    auto& block_max = block_max_;
    block_max.resize(blocks);
    for (int64_t b = 0; b < blocks; ++b) block_max[b] = max_of_block(x + b * kBlock);
    if (p_.max_tokens > 0 && blocks > p_.max_tokens)
      floor = std::max(floor, static_cast<double>(block_floor()) - lse);
    const bool prefilter = blocks > 0 && std::isfinite(floor + lse);
    const scalar_t below = prefilter ? lower_bound_of(floor, lse) : scalar_t(0);
    for (int64_t b = 0; b < blocks; ++b) {
      if (prefilter && block_max[b] < below) continue;
      for (int64_t c = b * kBlock; c < (b + 1) * kBlock; ++c) offer_class(c, x[c], lse, floor);
    }
    for (int64_t c = blocks * kBlock; c < C; ++c) offer_class(c, x[c * stride], lse, floor);
  }

  // The (max_tokens + 1)-th largest block maximum (kLowest where it is not a finite value, so
  // no floor). Selecting among all blocks costs more than the rest of the frame, so only the
  // blocks reaching a guess are ranked: the mean block maximum plus the offset the previous
  // frame's (2 max_tokens + 1)-th largest had from its mean (frames differ mostly by a shift
  // of all classes), which usually leaves about 2 max_tokens blocks; where fewer than
  // max_tokens + 1 reach it, all are ranked. NaN maxima are left out (they would break the
  // order; such a block is always offered).
  scalar_t block_floor() {
    const int64_t K = p_.max_tokens;
    auto& ranked = ranked_;
    const double mean = mean_of(block_max_);
    const double guess = std::isfinite(mean + offset_) ? mean + offset_ : kNegInf;
    ranked.clear();
    for (const scalar_t m : block_max_)
      if (m >= guess) ranked.push_back(m);
    if (static_cast<int64_t>(ranked.size()) <= K) {
      ranked.clear();
      for (const scalar_t m : block_max_) ranked.push_back(std::isnan(m) ? kLowest : m);
    }
    const auto kth = ranked.begin() + K;
    std::nth_element(ranked.begin(), kth, ranked.end(), std::greater<scalar_t>());
    const scalar_t found = *kth;
    const auto next = ranked.begin() + std::min<int64_t>(2 * K, ranked.size() - 1);
    if (next > kth) std::nth_element(kth + 1, next, ranked.end(), std::greater<scalar_t>());
    offset_ = static_cast<double>(*next) - mean;
    return std::isfinite(found) ? found : kLowest;
  }

  // The mean of v, in four running sums for the CPU's parallelism.
  static double mean_of(const std::vector<scalar_t>& v) {
    double sum[4] = {0, 0, 0, 0};
    const size_t n = v.size(), whole = n / 4 * 4;
    for (size_t i = 0; i < whole; i += 4)
      for (int j = 0; j < 4; ++j) sum[j] += v[i + j];
    for (size_t i = whole; i < n; ++i) sum[0] += v[i];
    return (sum[0] + sum[1] + sum[2] + sum[3]) / static_cast<double>(n);
  }

  // Offers class c if it reaches the floor, which includes token_min_logp (the max_tokens best
  // are all at least the floor: x - lse rounds monotonically).
  void offer_class(int64_t c, scalar_t x, double lse, double floor) {
    const double v = static_cast<double>(x) - lse;
    if (v >= floor && v > kNegInf && c != p_.blank) offer(static_cast<int32_t>(c), v);
  }

  // The largest of kBlock values (some NaN: possibly NaN), as a tree for the CPU's parallelism.
  static scalar_t max_of_block(const scalar_t* x) {
    const auto top = [](scalar_t a, scalar_t b) { return a > b ? a : b; };
    return top(top(top(x[0], x[1]), top(x[2], x[3])), top(top(x[4], x[5]), top(x[6], x[7])));
  }

  // A value every class with x - lse >= floor (in double) is at least: the margin covers the
  // rounding of x - lse, and the bound is rounded down into scalar_t; offer makes the exact test.
  static scalar_t lower_bound_of(double floor, double lse) {
    constexpr double kLo = std::numeric_limits<scalar_t>::lowest();
    constexpr double kHi = std::numeric_limits<scalar_t>::max();
    const double bound = floor + lse - (std::abs(floor) + std::abs(lse)) * 1e-6 - 1e-30;
    const auto below = static_cast<scalar_t>(std::min(std::max(bound, kLo), kHi));
    return static_cast<double>(below) > bound
               ? std::nextafter(below, -std::numeric_limits<scalar_t>::infinity())
               : below;
  }

  // Ordering of candidate labels: the larger log-prob, then the smaller class.
  struct Larger {
    bool operator()(const std::pair<int32_t, double>& a,
                    const std::pair<int32_t, double>& b) const {
      return a.second > b.second || (a.second == b.second && a.first < b.first);
    }
  };

  // Adds a candidate label. With max_tokens, labels are collected up to twice max_tokens and
  // then cut to the max_tokens best, whose worst is the floor a later label must beat, so a
  // frame of C classes costs a pass and a few linear-time cuts.
  void offer(int32_t c, double v) {
    if (st_.label_floor.first >= 0 && !Larger()({c, v}, st_.label_floor)) return;
    auto& labels = st_.labels;
    labels.emplace_back(c, v);
    if (p_.max_tokens > 0 && static_cast<int64_t>(labels.size()) >= 2 * p_.max_tokens) compact();
  }

  void compact() {
    auto& labels = st_.labels;
    const auto kth = labels.begin() + (p_.max_tokens - 1);
    std::nth_element(labels.begin(), kth, labels.end(), Larger());
    st_.label_floor = *kth;
    labels.resize(p_.max_tokens);
  }

  bool keep(double v) const {
    return v > kNegInf && (!p_.has_token_min_logp || v >= p_.token_min_logp);
  }

  const scalar_t* row_of(int64_t n, int64_t t) const {
    return static_cast<const scalar_t*>(p_.scores) + t * p_.stride_t + n * p_.stride_n;
  }

  // The accumulation of one frame. Each existing prefix gains the blank and its repeat, and
  // each of its children among the hypotheses the growth into it: a candidate gets at most two
  // terms and log_add is symmetric, so the values equal the reference's order of operations.
  // Then the new prefixes, made only where they can still rank among the beam_width best: the
  // floor is the beam_width-th best rank offered so far, and a new prefix has no other source
  // than its parent, so a frame costs about beam_width candidates however many labels it has.
  void grow(double blank_lp) {
    auto& beams = st_.beams;
    auto& cand = st_.candidates;
    auto& kids = st_.kids;
    const std::vector<double>& lp = st_.label_logp;
    cand.clear();
    for (size_t i = 0; i < beams.size(); ++i) {
      st_.beam_of_node[beams[i].node] = static_cast<int32_t>(i);
      const Node& node = st_.nodes[beams[i].node];
      cand.push_back({static_cast<int32_t>(i), -1, kNegInf, kNegInf, 0, node.lm_state,
                      node.lm_score, node.trie, 0});
    }
    // each hypothesis' children among the hypotheses: growing a prefix into one of them merges
    // into it (the trie holds one node per prefix, so this is exact)
    if (kids.size() < beams.size()) kids.resize(beams.size());
    for (size_t i = 0; i < beams.size(); ++i) kids[i].clear();
    for (size_t i = 0; i < beams.size(); ++i) {
      const Node& node = st_.nodes[beams[i].node];
      if (node.parent >= 0 && st_.beam_of_node[node.parent] >= 0)
        kids[st_.beam_of_node[node.parent]].emplace_back(node.token, static_cast<int32_t>(i));
    }
    for (size_t i = 0; i < beams.size(); ++i) {
      const Hypothesis& h = beams[i];
      const Node& node = st_.nodes[h.node];
      const double total = h.total;
      cand[i].p_b = log_add(cand[i].p_b, total + blank_lp);
      if (node.length > 0) cand[i].p_nb = log_add(cand[i].p_nb, h.p_nb + lp[node.token]);
      for (const auto& [c, j] : kids[i]) {
        if (lp[c] == kNegInf) continue;  // not a candidate label this frame
        const double source = node.length > 0 && c == node.token ? h.p_b : total;
        cand[j].p_nb = log_add(cand[j].p_nb, source + lp[c]);
      }
    }
    st_.floor_heap.clear();
    for (Candidate& c : cand) {
      rank(c);
      if (c.total > kNegInf) raise_floor(c.rank);
    }
    // Without a language model or hotwords a new prefix ranks by its CTC score, at most its
    // source's total plus the label's log-prob. So only labels within floor - the best total
    // can make one (the floor only rises), and with those in descending order the first that
    // cannot reach the floor ends a hypothesis' labels.
    const bool ctc_only = p_.lm_keys == nullptr && p_.hotword_nodes == nullptr;
    auto& labels = st_.labels;
    auto usable = labels.end();
    if (ctc_only) {
      double best = kNegInf;
      for (const Hypothesis& h : beams) best = std::max(best, h.total);
      const double cut = floor() - best;
      if (std::isfinite(cut)) {
        // the margin keeps every label whose sum with a total could round up to the floor
        const double below = cut - (std::abs(floor()) + std::abs(best)) * 1e-12 - 1e-300;
        usable = std::partition(labels.begin(), labels.end(),
                                [below](const auto& label) { return label.second >= below; });
      }
      std::sort(labels.begin(), usable, Larger());
    }
    for (size_t i = 0; i < beams.size(); ++i) {
      const Hypothesis h = beams[i];
      const Node node = st_.nodes[h.node];
      const double total = h.total;
      for (auto label = labels.begin(); label != usable; ++label) {
        const auto [c, v] = *label;
        if (ctc_only && total + v < floor()) break;
        if (is_kid(kids[i], c)) continue;  // merged above
        const double value = (node.length > 0 && c == node.token ? h.p_b : total) + v;
        if (ctc_only && value < floor()) continue;
        TrieState trie = node.trie;
        if (!trie_advance(trie, c)) continue;  // leaves the lexicon
        int64_t state = node.lm_state;
        double lm = node.lm_score;
        if (p_.lm_token_ids != nullptr) {
          lm += to_ln_ * lm_advance(state, p_.lm_token_ids[c]) + p_.word_bonus;
        } else if (p_.lm_word_ids != nullptr && c == p_.word_delimiter) {
          lm += to_ln_ * lm_advance(state, word_id(node.trie.lex)) + p_.word_bonus;
        }
        Candidate grown{static_cast<int32_t>(i), c, kNegInf, value, 0, state, lm, trie, 0};
        rank(grown);
        if (!(grown.total > kNegInf) || grown.rank < floor()) continue;
        cand.push_back(grown);
        raise_floor(grown.rank);
      }
    }
    for (const Hypothesis& h : beams) st_.beam_of_node[h.node] = -1;
  }

  static bool is_kid(const std::vector<std::pair<int32_t, int32_t>>& kids, int32_t c) {
    for (const auto& kid : kids)
      if (kid.first == c) return true;
    return false;
  }

  void rank(Candidate& c) const {
    c.total = log_add(c.p_b, c.p_nb);
    c.rank = c.total + c.lm_score + hot_bonus(c.trie);
  }

  // The rank a candidate must reach to enter the beam: the beam_width-th best offered so far.
  double floor() const {
    const auto& heap = st_.floor_heap;
    return static_cast<int64_t>(heap.size()) < p_.beam_width ? kNegInf : heap.front();
  }

  void raise_floor(double rank) {
    auto& heap = st_.floor_heap;
    const std::greater<double> smallest_first;
    if (static_cast<int64_t>(heap.size()) < p_.beam_width) {
      heap.push_back(rank);
      std::push_heap(heap.begin(), heap.end(), smallest_first);
    } else if (rank > heap.front()) {
      std::pop_heap(heap.begin(), heap.end(), smallest_first);
      heap.back() = rank;
      std::push_heap(heap.begin(), heap.end(), smallest_first);
    }
  }

  void select(int32_t t) {
    auto& cand = st_.candidates;
    size_t kept = 0;
    for (Candidate& c : cand)
      if (c.total > kNegInf) cand[kept++] = c;  // drops impossible (and NaN) hypotheses
    cand.resize(kept);
    const size_t width = std::min<size_t>(cand.size(), static_cast<size_t>(p_.beam_width));
    const auto better = [this](const Candidate& a, const Candidate& b) {
      if (a.rank != b.rank) return a.rank > b.rank;
      return prefix_less(a, b);
    };
    if (width < cand.size())
      std::nth_element(cand.begin(), cand.begin() + width, cand.end(), better);
    std::sort(cand.begin(), cand.begin() + width, better);
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
      next.push_back({node, c.p_b, c.p_nb, c.total});
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
      final[i] = beams[i].total + node.lm_score + end + hot;
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
      p_.ctc_log_probs_out[slot] = h.total;
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

  static constexpr int64_t kBlock = 8;  // max_of_block's width
  static constexpr scalar_t kLowest = std::numeric_limits<scalar_t>::lowest();

  const BeamSearchParams& p_;
  Store& st_;
  // offer_row's, kept across the sample's frames
  std::vector<scalar_t> block_max_, ranked_;
  double offset_ = kNegInf;  // see block_floor
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
