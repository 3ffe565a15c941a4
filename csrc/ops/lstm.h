// Shared CPU/CUDA glue of the fused LSTM ops. The argument checks live in lstm.cpp (with the
// CPU registrations); the recurrence itself (time loop, ATen GEMMs, how the work is split over
// CPU threads) in lstm_recurrence.cpp. The pointwise step kernels are passed in as launchers,
// so CPU and CUDA share every line above the kernels.
#pragma once
#include <ATen/ATen.h>

#include <functional>
#include <optional>
#include <tuple>

#include "kernels/lstm.h"

namespace fastcrnn::ops {

using LstmForwardStep = std::function<void(const LstmForwardParams&)>;
using LstmBackwardStep = std::function<void(const LstmBackwardParams&)>;

// The dtype of the cell state and of every accumulation: float64 for float64, else float32.
inline at::ScalarType lstm_acc_type(at::ScalarType st) {
  return st == at::kDouble ? at::kDouble : at::kFloat;
}

using Tensor3 = std::tuple<at::Tensor, at::Tensor, at::Tensor>;
using Tensor6 = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

// ---- results (as_tuple() is the op schema's order) ----

// output (T, N, D*H), h_n and c_n (D, N, H); for backward: acts (T, N, D*4H) the gate
// activations, hs (D, T+1, N, H) the h states, cs (D, T+1, N, H) the c states in the
// accumulate dtype (all three empty without save_for_backward).
struct LstmLayerOutputs {
  at::Tensor output, h_n, c_n, acts, hs, cs;
  Tensor6 as_tuple() const { return {output, h_n, c_n, acts, hs, cs}; }
};

// Gradients of a layer or a cell: input, initial h and c, weight_ih, weight_hh, bias (the
// combined bias: present even when the layer has none).
struct LstmGrads {
  at::Tensor input, h0, c0, weight_ih, weight_hh, bias;
  Tensor6 as_tuple() const { return {input, h0, c0, weight_ih, weight_hh, bias}; }
};

// One cell step: h' (N, H), c' (N, H) and the gate activations (N, 4H) for backward.
struct LstmCellOutputs {
  at::Tensor h, c, acts;
  Tensor3 as_tuple() const { return {h, c, acts}; }
};

// W_ih and W_hh packed once by the caller (pack_linear_weight, see packed_gemm.h), for
// inference on the CPU: w_ih (1, ceil(D*4H / P), I, P) from (D*4H, I); w_hh
// (D, ceil(4H / P), H, P) from (D, 4H, H).
struct LstmPackedWeights {
  at::Tensor w_ih, w_hh;
};

// ---- argument checks (lstm.cpp): TypeError / ValueError naming the argument ----

struct LstmSizes {
  int64_t T = 1, N = 0, I = 0, D = 1, H = 0;
};

// x (T, N, I); h0, c0 (D, N, H); w_ih (D*4H, I); w_hh (D, 4H, H) with D in {1, 2};
// bias (D*4H) or none. Lengths are checked by the recurrence (their values only on CPU).
LstmSizes check_lstm_layer(const at::Tensor& x, const at::Tensor& h0, const at::Tensor& c0,
                           const at::Tensor& w_ih, const at::Tensor& w_hh,
                           const std::optional<at::Tensor>& bias);
// As check_lstm_layer, with packed weights: D and H come from h0 (D, N, H); float32 /
// float64 CPU tensors only.
LstmSizes check_lstm_layer_packed(const at::Tensor& x, const at::Tensor& h0, const at::Tensor& c0,
                                  const LstmPackedWeights& w,
                                  const std::optional<at::Tensor>& bias);
LstmSizes check_lstm_layer_backward(const at::Tensor& grad_output, const at::Tensor& grad_hn,
                                    const at::Tensor& grad_cn, const at::Tensor& x,
                                    const at::Tensor& w_hh, const at::Tensor& acts,
                                    const at::Tensor& hs, const at::Tensor& cs);
// x (N, I); h, c (N, H); w_ih (4H, I); w_hh (4H, H); bias (4H) or none. T = D = 1.
LstmSizes check_lstm_cell(const at::Tensor& x, const at::Tensor& h, const at::Tensor& c,
                          const at::Tensor& w_ih, const at::Tensor& w_hh,
                          const std::optional<at::Tensor>& bias);
LstmSizes check_lstm_cell_backward(const at::Tensor& grad_h, const at::Tensor& grad_c,
                                   const at::Tensor& x, const at::Tensor& w_hh,
                                   const at::Tensor& acts);

// ---- the recurrence (lstm_recurrence.cpp); each checks its arguments first ----

// Whole-sequence layer, one or both directions (D = w_hh.size(0)); lengths (N,) int or none.
// Direction 0 reads state s and writes s+1 at time t = s; direction 1 reads state t+1 and
// writes t. Without `save` (inference) the loop keeps only two states per direction. With
// `prepacked` the layer multiplies by those (w_ih and w_hh are not read).
LstmLayerOutputs lstm_layer_forward(const at::Tensor& x, const at::Tensor& h0, const at::Tensor& c0,
                                    const at::Tensor& w_ih, const at::Tensor& w_hh,
                                    const std::optional<at::Tensor>& bias,
                                    const std::optional<at::Tensor>& lengths, bool save,
                                    const LstmForwardStep& step,
                                    const LstmPackedWeights* prepacked = nullptr);

LstmGrads lstm_layer_backward(const at::Tensor& grad_output, const at::Tensor& grad_hn,
                              const at::Tensor& grad_cn, const at::Tensor& x,
                              const at::Tensor& w_ih, const at::Tensor& w_hh,
                              const std::optional<at::Tensor>& lengths, const at::Tensor& acts,
                              const at::Tensor& hs, const at::Tensor& cs,
                              const LstmBackwardStep& step);

// The gates come from two GEMMs (x·W_ihᵀ + b, then + h·W_hhᵀ).
LstmCellOutputs lstm_cell_forward(const at::Tensor& x, const at::Tensor& h, const at::Tensor& c,
                                  const at::Tensor& w_ih, const at::Tensor& w_hh,
                                  const std::optional<at::Tensor>& bias,
                                  const LstmForwardStep& step);

LstmGrads lstm_cell_backward(const at::Tensor& grad_h, const at::Tensor& grad_c,
                             const at::Tensor& x, const at::Tensor& h, const at::Tensor& c,
                             const at::Tensor& w_ih, const at::Tensor& w_hh, const at::Tensor& acts,
                             const LstmBackwardStep& step);

}  // namespace fastcrnn::ops
