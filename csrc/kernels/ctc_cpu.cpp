// CTC loss forward-backward on the CPU. Compiled once per instruction set (see cpu_isa.h).
// One file over 400 lines on purpose: the forward and backward recursions share the lane-grouped
// window layout and its vector helpers, which must inline into both within one translation unit.
//
// Forward: for from_logits, the log-sum-exp of every (t, n) row (parallel over rows); then the
// log-space alpha recursion over the reachable window of states, kGroup samples at a time in
// the lanes of SIMD vectors (a three-way log-sum-exp with at::vec exp_u20 and a polynomial log),
// parallel over groups. Backward: every (t, n) gradient row's dense term grad_nll * p over C,
// parallel over rows; then the beta recursion, grouped the same way, turns alpha * beta into
// each frame's scaled state posteriors and subtracts them from the <= 2L + 1 label entries of
// the frame's rows (in state order, so repeated labels accumulate deterministically).
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <type_traits>
#include <utility>
#include <vector>

#include "kernels/ctc.h"

namespace fastcrnn::cpu::FASTCRNN_ISA_NS {
namespace {

template <typename acc_t>
constexpr acc_t kNegInf = -std::numeric_limits<acc_t>::infinity();
template <typename acc_t>
constexpr acc_t kNaN = std::numeric_limits<acc_t>::quiet_NaN();

// One sample's validated view.
struct Sample {
  int64_t Tn = 0, L = 0, S = 1;
  const int64_t* labels = nullptr;
  bool bad = false;         // invalid length / label: NaN loss
  bool impossible = false;  // L > Tn: +inf loss without recursion
};

Sample sample_of(const CtcParams& p, int64_t n) {
  Sample s;
  s.Tn = p.input_lengths[n];
  s.L = p.target_lengths[n];
  const int64_t off = p.target_offsets[n];
  if (s.Tn < 0 || s.Tn > p.T || s.L < 0 || s.L > p.max_target_length || off < 0 ||
      off > p.targets_numel - s.L) {
    s.bad = true;
    s.Tn = std::min<int64_t>(std::max<int64_t>(s.Tn, 0), p.T);
    s.L = 0;
    return s;
  }
  s.labels = p.targets + off;
  for (int64_t i = 0; i < s.L; ++i) {
    const int64_t c = s.labels[i];
    if (c < 0 || c >= p.C || c == p.blank) {
      s.bad = true;
      s.L = 0;
      return s;
    }
  }
  s.impossible = s.L > s.Tn;
  s.S = 2 * s.L + 1;
  if (!s.impossible && s.S > p.W) {  // more states than a workspace row holds
    s.bad = true;
    s.L = 0;
    s.S = 1;
  }
  return s;
}

inline int64_t label_of(const Sample& s, int64_t state, int64_t blank) {
  return (state & 1) ? s.labels[state >> 1] : blank;
}
inline int64_t window_lo(const Sample& s, int64_t t) {
  return std::max<int64_t>(0, s.S - 2 * (s.Tn - t));
}
inline int64_t window_hi(const Sample& s, int64_t t) {
  return std::min<int64_t>(s.S - 1, 2 * t + 1);
}

// log(x) for x in [1, 3.01] (the sum of three exponentials whose largest is exp(0) = 1):
// log(z) = 2 atanh((z - 1) / (z + 1)) after halving x > sqrt(2); error below 2e-10.
inline at::vec::Vectorized<float> log_1_to_3(at::vec::Vectorized<float> x) {
  using V = at::vec::Vectorized<float>;
  const V big = x > V(1.41421356f);
  const V z = V::blendv(x, x * V(0.5f), big);
  const V k = V::blendv(V(0.f), V(0.693147180559945f), big);
  const V u = (z - V(1.f)) / (z + V(1.f));
  const V u2 = u * u;
  V poly = V(2.f / 11.f);
  poly = poly * u2 + V(2.f / 9.f);
  poly = poly * u2 + V(2.f / 7.f);
  poly = poly * u2 + V(2.f / 5.f);
  poly = poly * u2 + V(2.f / 3.f);
  poly = poly * u2 + V(2.f);
  return k + u * poly;
}

inline double log_add(double a, double b) {
  if (std::isnan(a) || std::isnan(b)) return std::numeric_limits<double>::quiet_NaN();
  const double m = std::max(a, b);
  if (m == -std::numeric_limits<double>::infinity()) return m;
  return m + std::log(std::exp(a - m) + std::exp(b - m));
}

// Log-sum-exp of every logits row (parallel over the T * N rows). A row holding NaN or +inf, or
// only -inf, gives NaN, as log_softmax does.
template <typename acc_t>
void row_norms(const CtcParams& p) {
  const auto* x = static_cast<const acc_t*>(p.scores);
  auto* norms = static_cast<acc_t*>(p.norms);
  const int64_t rows = p.T * p.N;
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(p.C, 1));
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t t = r / p.N, n = r % p.N;
      const acc_t* row = x + t * p.stride_t + n * p.stride_n;
      acc_t m = kNegInf<acc_t>;
      bool nan = false;
      int64_t c = 0;
      if constexpr (std::is_same_v<acc_t, float>) {
        using V = at::vec::Vectorized<float>;
        constexpr int64_t K = V::size();
        if (p.C >= K) {
          V vm = V::loadu(row);
          for (c = K; c + K <= p.C; c += K) vm = at::vec::maximum(vm, V::loadu(row + c));
          alignas(64) float lanes[K];
          vm.store(lanes);
          for (int64_t l = 0; l < K; ++l) {
            nan = nan || std::isnan(lanes[l]);
            m = std::max(m, lanes[l]);
          }
        }
      }
      for (; c < p.C; ++c) {
        nan = nan || std::isnan(row[c]);
        m = std::max(m, row[c]);
      }
      if (nan || m == kNegInf<acc_t> || m == -kNegInf<acc_t>) {
        norms[r] = kNaN<acc_t>;
        continue;
      }
      acc_t sum = 0;
      c = 0;
      if constexpr (std::is_same_v<acc_t, float>) {
        using V = at::vec::Vectorized<float>;
        constexpr int64_t K = V::size();
        V acc(0.f);
        const V vm(m);
        for (; c + K <= p.C; c += K) acc = acc + (V::loadu(row + c) - vm).exp_u20();
        alignas(64) float lanes[K];
        acc.store(lanes);
        for (int64_t l = 0; l < K; ++l) sum += lanes[l];
      }
      for (; c < p.C; ++c) sum += std::exp(row[c] - m);
      norms[r] = m + std::log(sum);
    }
  });
}

// A sample that needs a recursion: valid, non-empty and alignable.
inline bool needs_recursion(const Sample& s) { return !s.bad && s.Tn > 0 && !s.impossible; }

// nll of a sample without a recursion.
template <typename acc_t>
acc_t trivial_nll(const Sample& s) {
  if (s.bad) return kNaN<acc_t>;
  if (s.Tn == 0) return s.L == 0 ? acc_t(0) : -kNegInf<acc_t>;
  return -kNegInf<acc_t>;  // impossible
}

// ---------------------------------------------------------------- lane-major recursions
//
// The recursions run kGroup samples at once, one sample per SIMD lane: at OCR sizes a sample's
// window is ~10 states, which vectorized over states leaves most lanes idle and every frame a
// short dependent chain. Across samples, every state of a frame is an independent full-width
// vector. Samples are sorted by state count before grouping, so a group's union of windows is
// close to each lane's own. Lane-major blocks hold element (t, state, lane) at
// (t * W + state) * width + lane; group k's block starts at k * kGroup * T * W in log_alpha, and
// only the last group may be narrower than kGroup.
//
// Inside the union window a lane also computes states outside its own window. This is exact:
// alpha of a state below the lane's window (it cannot reach the last states in time) only feeds
// such states; a state past the lane's 2L + 1 states gets emission -inf, so it stays -inf;
// alpha above 2t + 1 and beta below the window are -inf by construction. Only the lane's own
// window is ever read back (nll and the posteriors).
template <typename acc_t>
using Vec = at::vec::Vectorized<acc_t>;
constexpr int64_t kGroup = std::max<int64_t>(8, Vec<float>::size());
static_assert(kGroup % Vec<float>::size() == 0 && kGroup % Vec<double>::size() == 0);

// logsumexp(a, b, c); -inf everywhere gives -inf, NaN anywhere NaN.
inline Vec<float> lse3(Vec<float> a, Vec<float> b, Vec<float> c) {
  using V = Vec<float>;
  const V ninf(kNegInf<float>);
  // the largest term is exp(0) = 1: two exponentials for the other two
  const V hi_ab = at::vec::maximum(a, b);
  const V m = at::vec::maximum(hi_ab, c);
  const V empty = m == ninf;
  const V ms = V::blendv(m, V(0.f), empty);
  const V mid = at::vec::minimum(hi_ab, c), low = at::vec::minimum(a, b);
  const V sum = V(1.f) + (mid - ms).exp_u20() + (low - ms).exp_u20();
  return V::blendv(ms + log_1_to_3(sum), ninf, empty);
}
inline Vec<double> lse3(Vec<double> a, Vec<double> b, Vec<double> c) {
  using V = Vec<double>;
  const V ninf(kNegInf<double>);
  const V m = at::vec::maximum(at::vec::maximum(a, b), c);
  const V empty = m == ninf;
  const V ms = V::blendv(m, V(0.), empty);
  const V sum = (a - ms).exp() + (b - ms).exp() + (c - ms).exp();
  return V::blendv(ms + sum.log(), ninf, empty);
}
// exp(v), keeping NaN (exp_u20 maps NaN to a finite value).
inline Vec<float> exp_keep_nan(Vec<float> v) { return Vec<float>::blendv(v.exp_u20(), v, v != v); }
inline Vec<double> exp_keep_nan(Vec<double> v) { return v.exp(); }

// Which samples share a group (lane j of group k: order[k * kGroup + j]); the same in forward
// and backward.
struct Layout {
  std::vector<Sample> samples;
  std::vector<int64_t> order;  // samples by descending (runs a recursion, S, Tn)
  int64_t groups = 0;
  int64_t T = 0, W = 0, N = 0;

  explicit Layout(const CtcParams& p) : T(p.T), W(p.W), N(p.N) {
    samples.resize(N);
    order.resize(N);
    for (int64_t n = 0; n < N; ++n) {
      samples[n] = sample_of(p, n);
      order[n] = n;
    }
    const auto key = [&](int64_t n) {
      const Sample& s = samples[n];
      return needs_recursion(s) ? std::pair<int64_t, int64_t>{s.S, s.Tn}
                                : std::pair<int64_t, int64_t>{-1, -1};
    };
    std::stable_sort(order.begin(), order.end(),
                     [&](int64_t a, int64_t b) { return key(a) > key(b); });
    groups = (N + kGroup - 1) / kGroup;
  }
  int64_t width(int64_t k) const { return std::min<int64_t>(kGroup, N - k * kGroup); }
  int64_t block_offset(int64_t k) const { return k * kGroup * T * W; }
};

// Runs `fn(k)` for every group, parallel over threads. Group costs fall with k (sorted), so the
// threads take the next unstarted group as they finish one (largest first), which balances
// them; each group's result is independent of which thread ran it.
template <typename Fn>
void for_each_group(const Layout& layout, const Fn& fn) {
  std::atomic<int64_t> next{0};
  const int64_t slots = std::min<int64_t>(layout.groups, at::get_num_threads());
  at::parallel_for(0, slots, 1, [&](int64_t, int64_t) {
    for (int64_t k = next++; k < layout.groups; k = next++) fn(k);
  });
}

// Copies rows x width lanes between a kGroup-wide block and a width-wide one.
template <typename acc_t>
void narrow_lanes(const acc_t* wide, acc_t* narrow, int64_t rows, int64_t width) {
  for (int64_t r = 0; r < rows; ++r)
    std::copy(wide + r * kGroup, wide + r * kGroup + width, narrow + r * width);
}
template <typename acc_t>
void widen_lanes(const acc_t* narrow, acc_t* wide, int64_t rows, int64_t width) {
  for (int64_t r = 0; r < rows; ++r)
    std::copy(narrow + r * width, narrow + (r + 1) * width, wide + r * kGroup);
}

// One group's per-lane tables and per-thread buffers.
template <typename acc_t>
struct Group {
  using V = Vec<acc_t>;
  const CtcParams& p;
  const Layout& layout;
  int64_t k = 0, width = 0;
  int64_t n[kGroup];
  bool live[kGroup];  // this lane runs a recursion
  // S of each live lane, 0 otherwise; exact in float lanes: S > 2^24 would need a log_alpha
  // of more than T * W > 2^23 * 2^24 entries
  alignas(64) acc_t states[kGroup];
  alignas(64) acc_t shift[kGroup];  // emission shift of the current frame (-norm)
  std::vector<int64_t> offset;      // (W, kGroup): class element of each state in a frame
  std::vector<acc_t> skip;          // (W + 2, kGroup): 0 where s - 2 -> s is allowed, -inf else
  std::vector<acc_t> gathered;      // (W, kGroup): the current frame's emissions
  std::vector<acc_t> wide;          // (T, W, kGroup) block for a narrow (last) group

  Group(const CtcParams& p_, const Layout& l)
      : p(p_), layout(l), offset(l.W * kGroup), skip((l.W + 2) * kGroup), gathered(l.W * kGroup) {}

  // Sets up group k; `runs(n)` says whether sample n runs a recursion in this pass.
  template <typename Runs>
  void start(int64_t group, const Runs& runs) {
    k = group;
    width = layout.width(k);
    std::fill(skip.begin(), skip.end(), kNegInf<acc_t>);
    for (int64_t j = 0; j < kGroup; ++j) {
      n[j] = layout.order[k * kGroup + std::min(j, width - 1)];
      const Sample& s = layout.samples[n[j]];
      live[j] = j < width && runs(n[j]);
      states[j] = live[j] ? acc_t(s.S) : acc_t(0);
      const int64_t row = n[j] * p.stride_n;
      for (int64_t st = 0; st < p.W; ++st)
        offset[st * kGroup + j] = row + (live[j] && st < s.S ? label_of(s, st, p.blank) : p.blank);
      if (!live[j]) continue;
      for (int64_t st = 3; st < s.S; st += 2)
        if (s.labels[st >> 1] != s.labels[(st >> 1) - 1]) skip[st * kGroup + j] = 0;
    }
  }
  int64_t frames() const {
    int64_t f = 0;
    for (int64_t j = 0; j < kGroup; ++j)
      if (live[j]) f = std::max(f, layout.samples[n[j]].Tn);
    return f;
  }
  // The union of the live lanes' windows at frame t (lo > hi: none).
  std::pair<int64_t, int64_t> window(int64_t t) const {
    int64_t lo = p.W, hi = -1;
    for (int64_t j = 0; j < kGroup; ++j) {
      const Sample& s = layout.samples[n[j]];
      if (!live[j] || t >= s.Tn) continue;
      lo = std::min(lo, window_lo(s, t));
      hi = std::max(hi, window_hi(s, t));
    }
    return {lo, hi};
  }
  // Gathers frame t's emissions of states lo..hi.
  void gather(const acc_t* x, const acc_t* norms, int64_t t, int64_t lo, int64_t hi) {
    const acc_t* frame = x + t * p.stride_t;
    for (int64_t st = lo; st <= hi; ++st)
      for (int64_t j = 0; j < kGroup; ++j)
        gathered[st * kGroup + j] = frame[offset[st * kGroup + j]];
    for (int64_t j = 0; j < kGroup; ++j)
      shift[j] = p.from_logits ? -norms[t * p.N + n[j]] : acc_t(0);
  }
  // Lanes [j, j + K) of state st's emission: -inf where the lane has no such state.
  V emission(int64_t st, int64_t j) const {
    const V e = V::loadu(gathered.data() + st * kGroup + j) + V::loadu(shift + j);
    return V::blendv(V(kNegInf<acc_t>), e, V(acc_t(st)) < V::loadu(states + j));
  }
  // The block the forward computes in: log_alpha itself for a full group, else `wide`.
  acc_t* block(void* buffer) {
    acc_t* own = static_cast<acc_t*>(buffer) + layout.block_offset(k);
    if (width == kGroup) return own;
    wide.resize(p.T * p.W * kGroup);
    return wide.data();
  }
};

template <typename acc_t>
void forward(const CtcParams& p) {
  using V = Vec<acc_t>;
  constexpr int64_t K = V::size();
  if (p.from_logits) row_norms<acc_t>(p);
  const auto* x = static_cast<const acc_t*>(p.scores);
  const auto* norms = static_cast<const acc_t*>(p.norms);
  auto* nll = static_cast<acc_t*>(p.nll);
  const Layout layout(p);
  for (int64_t n = 0; n < p.N; ++n)
    if (!needs_recursion(layout.samples[n])) nll[n] = trivial_nll<acc_t>(layout.samples[n]);
  const V ninf(kNegInf<acc_t>);
  const int64_t row = p.W * kGroup;
  for_each_group(layout, [&](int64_t k) {
    Group<acc_t> g(p, layout);
    g.start(k, [&](int64_t n) { return needs_recursion(layout.samples[n]); });
    acc_t* block = g.block(p.log_alpha);
    const int64_t frames = g.frames();
    for (int64_t t = 0; t < p.T; ++t) {
      // every entry of log_alpha is written once: -inf outside the computed window
      acc_t* cur = block + t * row;
      const auto [lo, hi] = t < frames ? g.window(t) : std::pair<int64_t, int64_t>{p.W, -1};
      if (lo > hi) {
        std::fill(cur, cur + row, kNegInf<acc_t>);
        continue;
      }
      std::fill(cur, cur + lo * kGroup, kNegInf<acc_t>);
      std::fill(cur + (hi + 1) * kGroup, cur + row, kNegInf<acc_t>);
      g.gather(x, norms, t, lo, hi);
      const acc_t* prev = t > 0 ? cur - row : nullptr;
      for (int64_t st = lo; st <= hi; ++st)
        for (int64_t j = 0; j < kGroup; j += K) {
          V v = g.emission(st, j);
          if (t > 0) {
            const V a = V::loadu(prev + st * kGroup + j);
            const V b = st >= 1 ? V::loadu(prev + (st - 1) * kGroup + j) : ninf;
            const V c = st >= 2 ? V::loadu(prev + (st - 2) * kGroup + j) +
                                      V::loadu(g.skip.data() + st * kGroup + j)
                                : ninf;
            v = v + lse3(a, b, c);
          }
          v.store(cur + st * kGroup + j);
        }
      for (int64_t j = 0; j < kGroup; ++j) {
        const Sample& s = layout.samples[g.n[j]];
        if (!g.live[j] || t != s.Tn - 1) continue;
        const acc_t last = cur[(s.S - 1) * kGroup + j];
        nll[g.n[j]] =
            s.S > 1 ? -static_cast<acc_t>(log_add(last, cur[(s.S - 2) * kGroup + j])) : -last;
      }
    }
    if (g.width < kGroup)
      narrow_lanes(block, static_cast<acc_t*>(p.log_alpha) + layout.block_offset(k), p.T * p.W,
                   g.width);
  });
}

enum class RowKind { kNormal, kZero, kNaN };

// The beta recursion of every group, for the samples with a finite loss; subtracts each label
// state's scaled posterior g * exp(alpha + beta - emit + nll) from its gradient row (which
// already holds the dense term). A row belongs to one group, so one thread writes it, in
// state order: deterministic.
template <typename acc_t>
void subtract_posteriors(const CtcParams& p, const Layout& layout,
                         const std::vector<RowKind>& kind) {
  using V = Vec<acc_t>;
  constexpr int64_t K = V::size();
  const auto* x = static_cast<const acc_t*>(p.scores);
  const auto* norms = static_cast<const acc_t*>(p.norms);
  const auto* nll = static_cast<const acc_t*>(p.nll);
  const auto* grad_nll = static_cast<const acc_t*>(p.grad_nll);
  auto* grad = static_cast<acc_t*>(p.grad);
  const int64_t row = p.W * kGroup;
  const auto runs = [&](int64_t n) {
    return kind[n] == RowKind::kNormal && needs_recursion(layout.samples[n]);
  };
  for_each_group(layout, [&](int64_t k) {
    Group<acc_t> g(p, layout);
    g.start(k, runs);
    const int64_t frames = g.frames();
    if (frames == 0) return;
    const acc_t* alpha = static_cast<const acc_t*>(p.log_alpha) + layout.block_offset(k);
    std::vector<acc_t> alpha_wide;
    if (g.width < kGroup) {
      alpha_wide.assign(p.T * row, kNegInf<acc_t>);
      widen_lanes(alpha, alpha_wide.data(), p.T * p.W, g.width);
      alpha = alpha_wide.data();
    }
    // per lane: its grad_nll and nll; per frame: 1 where the lane's recursion starts (its last
    // frame). A flag, not the frame index: float lanes hold integers exactly only below 2^24.
    alignas(64) acc_t scale[kGroup], loss[kGroup], starting[kGroup];
    for (int64_t j = 0; j < kGroup; ++j) {
      scale[j] = g.live[j] ? grad_nll[g.n[j]] : acc_t(0);
      loss[j] = g.live[j] ? nll[g.n[j]] : acc_t(0);
    }
    // two rolling beta rows of W + 2 states (the two past the last are -inf), and the current
    // frame's posteriors
    std::vector<acc_t> rows(2 * (p.W + 2) * kGroup, kNegInf<acc_t>);
    std::vector<acc_t> gamma(row);
    acc_t* next = rows.data();
    acc_t* cur = rows.data() + (p.W + 2) * kGroup;
    for (int64_t t = frames - 1; t >= 0; --t) {
      const auto [lo, hi] = g.window(t);
      if (lo > hi) continue;  // no live lane has reached its last frame yet
      g.gather(x, norms, t, lo, hi);
      for (int64_t j = 0; j < kGroup; ++j)
        starting[j] = g.live[j] && t == layout.samples[g.n[j]].Tn - 1 ? acc_t(1) : acc_t(0);
      const acc_t* a = alpha + t * row;
      for (int64_t st = lo; st <= hi; ++st)
        for (int64_t j = 0; j < kGroup; j += K) {
          const V e = g.emission(st, j);
          const int64_t at = st * kGroup + j;
          V v = e +
                lse3(V::loadu(next + at), V::loadu(next + at + kGroup),
                     V::loadu(next + at + 2 * kGroup) + V::loadu(g.skip.data() + at + 2 * kGroup));
          // a lane's recursion starts at its last frame, on its last two states
          const V starts = (V::loadu(starting + j) == V(acc_t(1))) &
                           (V(acc_t(st + 2)) >= V::loadu(g.states + j));
          v = V::blendv(v, e, starts);
          v.store(cur + at);
          const V post = V::loadu(a + at) + v - e + V::loadu(loss + j);
          (exp_keep_nan(post) * V::loadu(scale + j)).store(gamma.data() + at);
        }
      for (int64_t j = 0; j < kGroup; ++j) {
        const Sample& s = layout.samples[g.n[j]];
        if (!g.live[j] || t >= s.Tn) continue;
        acc_t* out = grad + (t * p.N + g.n[j]) * p.C;
        const int64_t lane_lo = window_lo(s, t), lane_hi = window_hi(s, t);
        const acc_t* gm = gamma.data() + j;
        // every other state is a blank: summing those in a register avoids a chain of
        // read-modify-writes of out[blank] through memory (the order stays fixed)
        acc_t blank_sum = 0;
        for (int64_t st = lane_lo + (lane_lo & 1); st <= lane_hi; st += 2)
          blank_sum += gm[st * kGroup];
        for (int64_t st = lane_lo | 1; st <= lane_hi; st += 2)
          out[s.labels[st >> 1]] -= gm[st * kGroup];
        out[p.blank] -= blank_sum;
      }
      std::swap(next, cur);
    }
  });
}

// One gradient row: grad_nll * p over C, minus the label-state posteriors.
template <typename acc_t>
void write_row(const acc_t* row, acc_t norm, acc_t g, acc_t* out, int64_t C) {
  int64_t c = 0;
  if constexpr (std::is_same_v<acc_t, float>) {
    using V = at::vec::Vectorized<float>;
    constexpr int64_t K = V::size();
    const V vn(norm), vg(g), pinf(std::numeric_limits<float>::infinity());
    const auto lanes = [&](int64_t j) {
      const V v = V::loadu(row + j) - vn;
      V e = v.exp_u20();
      e = V::blendv(e, v, (v != v) | (v == pinf));  // exp_u20 maps NaN / +inf to finite values
      (e * vg).store(out + j);
    };
    for (; c + K <= C; c += K) lanes(c);
    // the tail as one vector overlapping the previous one (rewrites equal values), no libm exp
    if (c < C && C >= K) {
      lanes(C - K);
      c = C;
    }
  }
  for (; c < C; ++c) out[c] = g * std::exp(row[c] - norm);
}

template <typename acc_t>
void backward(const CtcParams& p) {
  const auto* nll = static_cast<const acc_t*>(p.nll);
  const auto* grad_nll = static_cast<const acc_t*>(p.grad_nll);
  const Layout layout(p);
  std::vector<RowKind> kind(p.N);
  for (int64_t n = 0; n < p.N; ++n) {
    const acc_t v = nll[n];
    if (layout.samples[n].bad || std::isnan(v)) {
      kind[n] = RowKind::kNaN;
    } else if (!std::isfinite(v)) {
      kind[n] = (p.zero_infinity && v > 0) ? RowKind::kZero : RowKind::kNaN;
    } else {
      kind[n] = RowKind::kNormal;
    }
  }
  const auto* x = static_cast<const acc_t*>(p.scores);
  const auto* norms = static_cast<const acc_t*>(p.norms);
  auto* grad = static_cast<acc_t*>(p.grad);
  const int64_t rows = p.T * p.N;
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(p.C, 1));
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t t = r / p.N, n = r % p.N;
      acc_t* out = grad + r * p.C;
      if (t >= layout.samples[n].Tn || kind[n] == RowKind::kZero) {
        std::fill(out, out + p.C, acc_t(0));
      } else if (kind[n] == RowKind::kNaN) {
        std::fill(out, out + p.C, kNaN<acc_t>);
      } else {
        const acc_t norm = p.from_logits ? norms[r] : acc_t(0);
        write_row<acc_t>(x + t * p.stride_t + n * p.stride_n, norm, grad_nll[n], out, p.C);
      }
    }
  });
  subtract_posteriors<acc_t>(p, layout, kind);
}

}  // namespace

void ctc_loss_forward_cpu(const CtcParams& p) {
  if (p.dtype == Dtype::kFloat64)
    forward<double>(p);
  else
    forward<float>(p);
}

void ctc_loss_backward_cpu(const CtcParams& p) {
  if (p.dtype == Dtype::kFloat64)
    backward<double>(p);
  else
    backward<float>(p);
}

}  // namespace fastcrnn::cpu::FASTCRNN_ISA_NS
