// The fused LSTM's recurrence, shared by CPU and CUDA: the time loop, the GEMMs around the
// pointwise step kernels (ATen's, or on the CPU our packed-weight kernel: PackedWeightGemm), and
// how the work is split over CPU threads.
//
// Layer forward: ONE GEMM x·W_ihᵀ + b over all T and both directions fills the gates buffer;
// then per step one recurrent GEMM per direction (accumulated into the gates) and ONE pointwise
// kernel for both directions. Layer backward: per step ONE pointwise kernel and one GEMM per
// direction (dgates·W_hh); then dx, dW_ih, dW_hh (one per direction) and dbias, each one GEMM
// or reduction over the whole sequence. On a multi-threaded CPU the time loop runs as lanes
// (lanes_pay): each direction, and each block of rows (sequences) of it, on its own thread;
// with too few rows for lanes one direction's recurrent GEMM runs as two column halves side by
// side (split_columns_pays). Large CPU buffers come from the block cache (buffer_cache.h).
// Without backward the layer keeps two states per direction and no activations.
//
// Past 400 lines on purpose: the layer's forward and backward and the cell's share the thread
// split (run_lanes), the step parameter builders and the packed-weight products.
#include "ops/lstm.h"

#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>

#include "ops/buffer_cache.h"
#include "ops/common.h"
#include "ops/packed_gemm.h"

namespace fastcrnn::ops {
namespace {

// On a multi-threaded CPU a layer's recurrence runs as independent lanes, each a (direction,
// block of rows) whose whole time loop runs on one thread, its recurrent products single-
// threaded, with no barrier between steps: a sequence's state never reads another sequence's,
// and the directions are independent within a layer. Splitting every small per-step product
// over the threads instead pays a synchronisation per call and partitions a 64-row problem
// poorly.
bool lanes_pay(const at::Tensor& x) {
  return x.is_cpu() && at::get_num_threads() >= 2 && !at::in_parallel_region();
}

// Rows of a lane at least: fewer would leave the micro-kernel's rows part-empty while every
// lane still streams the whole W_hh at every step.
constexpr int64_t kMinLaneRows = 16;

// Blocks of rows per direction (each a lane), 1 where lanes do not pay: the threads are shared
// out over the D directions first.
int64_t lane_row_blocks(const at::Tensor& x, int64_t D, int64_t N) {
  if (!lanes_pay(x)) return 1;
  const int64_t blocks = std::min<int64_t>(at::get_num_threads() / D, N / kMinLaneRows);
  return std::max<int64_t>(blocks, 1);
}

// Lane `lane` of D * blocks: its direction d, its first row n0 and the layer's step parameters
// cut to its rows (one direction, N = its rows, lengths from row n0; the per-step pointers are
// set by the time loop).
template <typename Params>
struct Lane {
  int64_t d, n0;
  Params q;
};

template <typename Params>
Lane<Params> lane_of(const Params& p, int64_t lane, int64_t blocks) {
  const int64_t b = lane % blocks;
  const int64_t n0 = p.N * b / blocks, n1 = p.N * (b + 1) / blocks;
  Params q = p;
  q.D = 1;
  q.N = n1 - n0;
  q.lengths = p.lengths ? p.lengths + n0 : nullptr;
  return {lane / blocks, n0, q};
}

// One direction on a multi-threaded CPU with too few rows for lanes: the per-step recurrent
// GEMM runs as two halves side by side (halves of the 4H gate columns forward, of the H output
// columns backward), each single-threaded. MKL gains nothing from a second thread on a small
// product, while two independent single-threaded halves keep both cores busy. Below ~1M
// multiply-adds a step the parallel region costs more than it saves.
bool split_columns_pays(const at::Tensor& x, int64_t D, int64_t N, int64_t H) {
  return D == 1 && H >= 2 && N * 4 * H * H >= (int64_t(1) << 20) && lanes_pay(x);
}

// Runs fn(0) ... fn(count - 1) over ATen's threads, each with the caller's thread-local state
// (grad and inference modes, dispatch keys), which ATen's parallel_for does not carry over.
template <typename Fn>
void run_lanes(int64_t count, const Fn& fn) {
  const at::ThreadLocalState tls;
  at::parallel_for(0, count, 1, [&](int64_t begin, int64_t end) {
    const at::ThreadLocalStateGuard guard(tls);
    for (int64_t i = begin; i < end; ++i) fn(i);
  });
}

// A step kernel's parameters with its sizes set: N sequences, H units, D directions.
template <typename Params>
Params step_params(Dtype dtype, int64_t N, int64_t H, int64_t D) {
  Params p;
  p.dtype = dtype;
  p.N = N;
  p.H = H;
  p.D = D;
  return p;
}

// Pointer to element `offset` of a tensor, in bytes of its dtype.
inline void* at_offset(const at::Tensor& t, int64_t offset) {
  return static_cast<char*>(t.data_ptr()) + offset * static_cast<int64_t>(t.element_size());
}

// Rows (T * N) from which the whole-sequence products (the forward's input product, the
// backward's dx, dW_ih and dW_hh) pack their B for our kernel: fewer rows would spend more on
// the packing than it saves.
constexpr int64_t kPackedInputMinRows = 128;

}  // namespace

LstmLayerOutputs lstm_layer_forward(const at::Tensor& x_in, const at::Tensor& h0,
                                    const at::Tensor& c0, const at::Tensor& w_ih_in,
                                    const at::Tensor& w_hh_in,
                                    const std::optional<at::Tensor>& bias,
                                    const std::optional<at::Tensor>& lengths, bool save,
                                    const LstmForwardStep& step,
                                    const LstmPackedWeights* prepacked) {
  const LstmSizes sz = prepacked ? check_lstm_layer_packed(x_in, h0, c0, *prepacked, bias)
                                 : check_lstm_layer(x_in, h0, c0, w_ih_in, w_hh_in, bias);
  const int64_t T = sz.T, N = sz.N, I = sz.I, D = sz.D, H = sz.H;
  const Dtype dtype = kernel_dtype(x_in, "input");
  at::Tensor len;
  if (lengths.has_value()) {
    len = checked_lengths(*lengths, N, x_in.device(), "lengths");
    if (x_in.is_cpu()) {
      TORCH_CHECK_VALUE(all_within(len, 0, T), "lengths must lie in [0, T=", T, "]");
    }
  }
  const at::Tensor x = x_in.contiguous();
  const at::Tensor w_ih = prepacked ? at::Tensor() : w_ih_in.contiguous();
  const at::Tensor w_hh = prepacked ? at::Tensor() : w_hh_in.contiguous();
  const auto opts = x.options();
  const auto acc_opts = opts.dtype(lstm_acc_type(x.scalar_type()));
  const int64_t G = D * 4 * H;  // gates per (t, n)

  // Without backward only the two latest states of each direction are kept: state s lives in
  // slot s % 2 (each step reads one parity and writes the other, in both directions).
  const int64_t slots = save ? T + 1 : 2;
  const auto slot = [&](int64_t s) { return save ? s : s % 2; };
  at::Tensor gates = empty_cached({T, N, G}, opts);
  at::Tensor hs = empty_cached({D, slots, N, H}, opts);
  at::Tensor cs = empty_cached({D, slots, N, H}, acc_opts);
  at::Tensor output = empty_cached({T, N, D * H}, opts);
  const at::Tensor b = bias.has_value() ? bias->contiguous() : at::Tensor();
  const void* b_ptr = b.defined() ? b.const_data_ptr() : nullptr;
  if (prepacked && T * N > 0) {
    PackedWeightGemm(prepacked->w_ih, I, G, dtype, T * N, I, G, false, true, b_ptr)
        .run(0, x.const_data_ptr(), gates.data_ptr());
  } else if (T * N >= kPackedInputMinRows && PackedWeightGemm::applies(x, dtype)) {
    PackedWeightGemm(w_ih.t().unsqueeze(0), dtype, T * N, I, G, false, true, b_ptr)
        .run(0, x.const_data_ptr(), gates.data_ptr());
  } else if (T * N > 0) {
    at::Tensor gates2d = gates.view({T * N, G});
    const at::Tensor x2d = x.view({T * N, I});
    if (bias.has_value())
      at::addmm_out(gates2d, *bias, x2d, w_ih.t());
    else
      at::mm_out(gates2d, x2d, w_ih.t());
  }
  for (int64_t d = 0; d < D; ++d) {
    const int64_t s0 = d == 0 ? 0 : T;
    hs[d][slot(s0)].copy_(h0[d]);
    cs[d][slot(s0)].copy_(c0[d]);
  }

  if (N > 0) {
    std::vector<at::Tensor> w_hh_t;
    for (int64_t d = 0; d < D && !prepacked; ++d) w_hh_t.push_back(w_hh[d].t());
    auto p = step_params<LstmForwardParams>(dtype, N, H, D);
    p.gates_stride = G;
    p.out_stride = D * H;
    p.lengths = len.defined() ? len.data_ptr<int64_t>() : nullptr;
    p.save_acts = save;
    const int64_t blocks = lane_row_blocks(x, D, N);
    const bool lanes = D * blocks >= 2;
    bool split_columns = !lanes && split_columns_pays(x, D, N, H);
    std::optional<PackedWeightGemm> packed;
    // parallel: without lanes the kernel splits one direction's columns over the threads
    if (prepacked) {
      packed.emplace(prepacked->w_hh, H, 4 * H, dtype, N, H, G, true, !lanes);
      split_columns = false;
    } else if (PackedWeightGemm::applies(x, dtype)) {
      packed.emplace(w_hh.transpose(1, 2), dtype, N, H, G, true, !lanes);
      split_columns = false;
    }
    // Step s of direction d for rows [n0, n0 + q.N): its time and pointers, written to q's
    // direction k (k = d for the whole layer's p, 0 in a lane's own parameters).
    const auto set_step = [&](LstmForwardParams& q, int64_t k, int64_t s, int64_t d, int64_t n0) {
      const int64_t t = d == 0 ? s : T - 1 - s;
      const int64_t s_in = slot(d == 0 ? t : t + 1), s_out = slot(d == 0 ? t + 1 : t);
      const int64_t state_in = ((d * slots + s_in) * N + n0) * H;
      const int64_t state_out = ((d * slots + s_out) * N + n0) * H;
      q.t[k] = t;
      q.gates[k] = at_offset(gates, (t * N + n0) * G + d * 4 * H);
      q.h_prev[k] = at_offset(hs, state_in);
      q.h_next[k] = at_offset(hs, state_out);
      q.c_prev[k] = at_offset(cs, state_in);
      q.c_next[k] = at_offset(cs, state_out);
      q.out[k] = at_offset(output, (t * N + n0) * D * H + d * H);
    };
    // gates[t] rows [n0, n0 + rows), direction d += h_prev · W_hh[d]^T
    const auto recurrent_gemm = [&](const LstmForwardParams& q, int64_t k, int64_t d, int64_t n0,
                                    int64_t rows) {
      if (packed) {
        packed->run(d, q.h_prev[k], q.gates[k], rows);
        return;
      }
      const int64_t t = q.t[k];
      at::Tensor g = gates[t].narrow(0, n0, rows).narrow(1, d * 4 * H, 4 * H);
      at::addmm_out(g, g, hs[d][slot(d == 0 ? t : t + 1)].narrow(0, n0, rows), w_hh_t[d]);
    };
    const auto recurrent_gemm_half = [&](int64_t half) {
      const int64_t t = p.t[0];
      at::Tensor g = gates[t].narrow(1, half * 2 * H, 2 * H);
      at::addmm_out(g, g, hs[0][slot(t)], w_hh_t[0].narrow(1, half * 2 * H, 2 * H));
    };
    if (lanes) {
      run_lanes(D * blocks, [&](int64_t lane) {
        auto [d, n0, q] = lane_of(p, lane, blocks);
        for (int64_t s = 0; s < T; ++s) {
          set_step(q, 0, s, d, n0);
          recurrent_gemm(q, 0, d, n0, q.N);
          step(q);
        }
      });
    } else {
      for (int64_t s = 0; s < T; ++s) {
        for (int64_t d = 0; d < D; ++d) set_step(p, d, s, d, 0);
        if (split_columns) {
          run_lanes(2, recurrent_gemm_half);
        } else {
          for (int64_t d = 0; d < D; ++d) recurrent_gemm(p, d, d, 0, N);
        }
        step(p);
      }
    }
  }
  at::Tensor h_n = empty_cached({D, N, H}, opts);
  at::Tensor c_n = empty_cached({D, N, H}, opts);
  for (int64_t d = 0; d < D; ++d) {
    const int64_t s_last = slot(d == 0 ? T : 0);
    h_n[d].copy_(hs[d][s_last]);
    c_n[d].copy_(cs[d][s_last]);
  }
  if (!save) {
    return {output,
            h_n,
            c_n,
            empty_cached({0}, opts),
            empty_cached({0}, opts),
            empty_cached({0}, acc_opts)};
  }
  return {output, h_n, c_n, gates, hs, cs};
}

LstmGrads lstm_layer_backward(const at::Tensor& grad_output, const at::Tensor& grad_hn,
                              const at::Tensor& grad_cn, const at::Tensor& x_in,
                              const at::Tensor& w_ih_in, const at::Tensor& w_hh_in,
                              const std::optional<at::Tensor>& lengths, const at::Tensor& acts,
                              const at::Tensor& hs, const at::Tensor& cs,
                              const LstmBackwardStep& step) {
  const LstmSizes sz =
      check_lstm_layer_backward(grad_output, grad_hn, grad_cn, x_in, w_hh_in, acts, hs, cs);
  const int64_t T = sz.T, N = sz.N, I = sz.I, D = sz.D, H = sz.H;
  const Dtype dtype = kernel_dtype(x_in, "input");
  const int64_t G = D * 4 * H;
  const auto opts = x_in.options();
  const auto acc = lstm_acc_type(x_in.scalar_type());
  at::Tensor len;
  if (lengths.has_value()) len = checked_lengths(*lengths, N, x_in.device(), "lengths");

  const at::Tensor x = x_in.contiguous();
  const at::Tensor w_ih = w_ih_in.contiguous();
  const at::Tensor w_hh = w_hh_in.contiguous();
  const at::Tensor dout = grad_output.to(x.scalar_type()).contiguous();
  const at::Tensor acts_c = acts.contiguous();
  const at::Tensor cs_c = cs.contiguous();
  at::Tensor dh_carry = copy_cached(grad_hn, acc);
  at::Tensor dc = copy_cached(grad_cn, acc);
  at::Tensor dgates = empty_cached({T, N, G}, opts);
  at::Tensor dh_rec = empty_cached({D, N, H}, opts);
  bool have_rec = false;

  if (N > 0 && T > 0) {
    auto p = step_params<LstmBackwardParams>(dtype, N, H, D);
    p.acts_stride = G;
    p.dout_stride = D * H;
    p.dgates_stride = G;
    p.lengths = len.defined() ? len.data_ptr<int64_t>() : nullptr;
    const int64_t blocks = lane_row_blocks(x, D, N);
    const bool lanes = D * blocks >= 2;
    bool split_columns = !lanes && split_columns_pays(x, D, N, H);
    std::optional<PackedWeightGemm> packed;
    if (PackedWeightGemm::applies(x, dtype)) {
      packed.emplace(w_hh, dtype, N, G, H, false, !lanes);
      split_columns = false;
    }
    // Step s of direction d for rows [n0, n0 + q.N), written to q's direction k (as in the
    // forward); dh_rec holds the previous step's recurrent gradient from the second step on.
    const auto set_step = [&](LstmBackwardParams& q, int64_t k, int64_t s, int64_t d, int64_t n0) {
      const int64_t t = d == 0 ? s : T - 1 - s;
      const int64_t s_in = d == 0 ? t : t + 1;
      q.t[k] = t;
      q.acts[k] = at_offset(acts_c, (t * N + n0) * G + d * 4 * H);
      q.c_prev[k] = at_offset(cs_c, ((d * (T + 1) + s_in) * N + n0) * H);
      q.dout[k] = at_offset(dout, (t * N + n0) * D * H + d * H);
      q.dh_rec[k] = s < T - 1 ? at_offset(dh_rec, (d * N + n0) * H) : nullptr;
      q.dh_carry[k] = at_offset(dh_carry, (d * N + n0) * H);
      q.dc[k] = at_offset(dc, (d * N + n0) * H);
      q.dgates[k] = at_offset(dgates, (t * N + n0) * G + d * 4 * H);
    };
    // dh_rec[d] rows [n0, n0 + rows) = dgates[t] (those rows, direction d) · W_hh[d]
    const auto recurrent_gemm = [&](const LstmBackwardParams& q, int64_t k, int64_t d, int64_t n0,
                                    int64_t rows) {
      if (packed) {
        packed->run(d, q.dgates[k], at_offset(dh_rec, (d * N + n0) * H), rows);
        return;
      }
      at::Tensor dh_rec_rows = dh_rec[d].narrow(0, n0, rows);
      at::mm_out(dh_rec_rows, dgates[q.t[k]].narrow(0, n0, rows).narrow(1, d * 4 * H, 4 * H),
                 w_hh[d]);
    };
    const auto recurrent_gemm_half = [&](int64_t half) {
      const int64_t begin = half == 0 ? 0 : H / 2, size = half == 0 ? H / 2 : H - H / 2;
      at::Tensor dh_rec_half = dh_rec[0].narrow(1, begin, size);
      at::mm_out(dh_rec_half, dgates[p.t[0]], w_hh[0].narrow(1, begin, size));
    };
    if (lanes) {
      run_lanes(D * blocks, [&](int64_t lane) {
        auto [d, n0, q] = lane_of(p, lane, blocks);
        for (int64_t s = T - 1; s >= 0; --s) {
          set_step(q, 0, s, d, n0);
          step(q);
          recurrent_gemm(q, 0, d, n0, q.N);
        }
      });
    } else {
      for (int64_t s = T - 1; s >= 0; --s) {
        for (int64_t d = 0; d < D; ++d) set_step(p, d, s, d, 0);
        step(p);
        if (split_columns) {
          run_lanes(2, recurrent_gemm_half);
        } else {
          for (int64_t d = 0; d < D; ++d) recurrent_gemm(p, d, d, 0, N);
        }
      }
    }
    have_rec = true;
  }
  at::Tensor dh0 =
      have_rec ? dh_carry.add_(dh_rec.to(acc)).to(x.scalar_type()) : dh_carry.to(x.scalar_type());
  at::Tensor dc0 = dc.to(x.scalar_type());

  const at::Tensor dg2d = dgates.view({T * N, G});
  at::Tensor dx = empty_cached({T, N, I}, opts);
  at::Tensor dw_ih = empty_cached({G, I}, opts);
  at::Tensor dw_hh = empty_cached({D, 4 * H, H}, opts);
  at::Tensor dbias = empty_cached({G}, opts);
  const auto h_prev = [&](int64_t d) {  // the states each step read: (T, N, H)
    return hs[d].narrow(0, d == 0 ? 0 : 1, T);
  };
  if (T * N >= kPackedInputMinRows && PackedWeightGemm::applies(x, dtype)) {
    // The whole-sequence products by our kernel too (as the forward's input product): dx
    // against W_ih packed, the weight gradients as rows of dgates transposed (one copy) against
    // x and the h states packed.
    PackedWeightGemm(w_ih.unsqueeze(0), dtype, T * N, G, I, false, true)
        .run(0, dg2d.const_data_ptr(), dx.data_ptr());
    at::Tensor dg_t = empty_cached({G, T * N}, opts);
    dg_t.copy_(dg2d.t());
    PackedWeightGemm(x.view({1, T * N, I}), dtype, G, T * N, I, false, true)
        .run(0, dg_t.const_data_ptr(), dw_ih.data_ptr());
    for (int64_t d = 0; d < D; ++d) {
      PackedWeightGemm(h_prev(d).reshape({1, T * N, H}), dtype, 4 * H, T * N, H, false, true)
          .run(0, at_offset(dg_t, d * 4 * H * T * N), at_offset(dw_hh, d * 4 * H * H));
    }
  } else {
    at::Tensor dx2d = dx.view({T * N, I});
    at::mm_out(dx2d, dg2d, w_ih);
    at::mm_out(dw_ih, dg2d.t(), x.view({T * N, I}));
    for (int64_t d = 0; d < D; ++d) {
      at::Tensor dw_hh_d = dw_hh[d];
      at::mm_out(dw_hh_d, dg2d.narrow(1, d * 4 * H, 4 * H).t(), h_prev(d).reshape({T * N, H}));
    }
  }
  at::sum_out(dbias, dg2d, {0});
  return {dx, dh0, dc0, dw_ih, dw_hh, dbias};
}

LstmCellOutputs lstm_cell_forward(const at::Tensor& x, const at::Tensor& h, const at::Tensor& c,
                                  const at::Tensor& w_ih, const at::Tensor& w_hh,
                                  const std::optional<at::Tensor>& bias,
                                  const LstmForwardStep& step) {
  const LstmSizes sz = check_lstm_cell(x, h, c, w_ih, w_hh, bias);
  const int64_t N = sz.N, I = sz.I, H = sz.H;
  const Dtype dtype = kernel_dtype(x, "input");
  const auto opts = x.options();
  const auto acc = lstm_acc_type(x.scalar_type());
  at::Tensor gates = empty_cached({N, 4 * H}, opts);
  // gates[:, cols] for the gate columns [begin, begin + size)
  const auto gate_gemm = [&](int64_t begin, int64_t size) {
    at::Tensor g = gates.narrow(1, begin, size);
    const auto rows = [&](const at::Tensor& w) { return w.narrow(0, begin, size).t(); };
    if (bias.has_value())
      at::addmm_out(g, bias->narrow(0, begin, size), x, rows(w_ih));
    else
      at::mm_out(g, x, rows(w_ih));
    at::addmm_out(g, g, h, rows(w_hh));
  };
  // Two single-threaded column halves side by side, as split_columns_pays explains for the layer.
  if (N * 4 * H * (I + H) >= (int64_t(1) << 20) && lanes_pay(x)) {
    run_lanes(2, [&](int64_t half) { gate_gemm(half * 2 * H, 2 * H); });
  } else {
    gate_gemm(0, 4 * H);
  }
  const at::Tensor c_acc = c.to(acc).contiguous();
  const at::Tensor h_c = h.contiguous();
  at::Tensor c_next = empty_cached({N, H}, opts.dtype(acc));
  at::Tensor h_next = empty_cached({N, H}, opts);
  if (N > 0) {
    auto p = step_params<LstmForwardParams>(dtype, N, H, 1);
    p.gates[0] = gates.data_ptr();
    p.gates_stride = 4 * H;
    p.h_prev[0] = h_c.data_ptr();
    p.h_next[0] = h_next.data_ptr();
    p.c_prev[0] = c_acc.data_ptr();
    p.c_next[0] = c_next.data_ptr();
    p.save_acts = true;
    step(p);
  }
  return {h_next, c_next.to(x.scalar_type()), gates};
}

LstmGrads lstm_cell_backward(const at::Tensor& grad_h, const at::Tensor& grad_c,
                             const at::Tensor& x, const at::Tensor& h, const at::Tensor& c,
                             const at::Tensor& w_ih, const at::Tensor& w_hh, const at::Tensor& acts,
                             const LstmBackwardStep& step) {
  const LstmSizes sz = check_lstm_cell_backward(grad_h, grad_c, x, w_hh, acts);
  const int64_t N = sz.N, I = sz.I, H = sz.H;
  const Dtype dtype = kernel_dtype(x, "input");
  const auto opts = x.options();
  const auto acc = lstm_acc_type(x.scalar_type());
  at::Tensor dh_carry = copy_cached(grad_h, acc);
  at::Tensor dc = copy_cached(grad_c, acc);
  const at::Tensor c_acc = c.to(acc).contiguous();
  const at::Tensor acts_c = acts.contiguous();
  at::Tensor dgates = empty_cached({N, 4 * H}, opts);
  if (N > 0) {
    auto p = step_params<LstmBackwardParams>(dtype, N, H, 1);
    p.acts[0] = acts_c.data_ptr();
    p.acts_stride = 4 * H;
    p.c_prev[0] = c_acc.data_ptr();
    p.dh_carry[0] = dh_carry.data_ptr();
    p.dc[0] = dc.data_ptr();
    p.dgates[0] = dgates.data_ptr();
    p.dgates_stride = 4 * H;
    step(p);
  }
  at::Tensor dx = empty_cached({N, I}, opts);
  at::Tensor dh = empty_cached({N, H}, opts);
  at::Tensor dw_ih = empty_cached(w_ih.sizes(), opts);
  at::Tensor dw_hh = empty_cached(w_hh.sizes(), opts);
  at::Tensor dbias = empty_cached({4 * H}, opts);
  at::mm_out(dx, dgates, w_ih);
  at::mm_out(dh, dgates, w_hh);
  at::mm_out(dw_ih, dgates.t(), x);
  at::mm_out(dw_hh, dgates.t(), h);
  at::sum_out(dbias, dgates, {0});
  return {dx, dh, dc.to(x.scalar_type()), dw_ih, dw_hh, dbias};
}

}  // namespace fastcrnn::ops
