// Shared CPU/CUDA glue of the fused LSTM ops (implemented in lstm.cpp): argument checks, the
// time loop with its ATen GEMMs, and the pointwise step kernels passed in as launchers.
#pragma once
#include <ATen/ATen.h>

#include <functional>
#include <optional>
#include <tuple>

#include "kernels/lstm.h"

namespace fastcrnn::ops {

using LstmForwardStep = std::function<void(const LstmForwardParams&)>;
using LstmBackwardStep = std::function<void(const LstmBackwardParams&)>;

using Tensor6 = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;
using Tensor3 = std::tuple<at::Tensor, at::Tensor, at::Tensor>;

// Whole-sequence layer, one or both directions (D = w_hh.size(0)).
//   x (T, N, I); h0, c0 (D, N, H); w_ih (D*4H, I); w_hh (D, 4H, H); bias (D*4H) or none;
//   lengths (N,) int or none.
// Returns output (T, N, D*H), h_n (D, N, H), c_n (D, N, H) and, for backward: acts (T, N, D*4H)
// the gate activations, hs (D, T+1, N, H) the h states, cs (D, T+1, N, H) the c states in the
// accumulate dtype. Direction 0 reads state s and writes s+1 at time t = s; direction 1 reads
// state t+1 and writes t. Without `save` (inference) acts, hs and cs are empty and the loop
// keeps only two states per direction.
Tensor6 lstm_layer_forward(const at::Tensor& x, const at::Tensor& h0, const at::Tensor& c0,
                           const at::Tensor& w_ih, const at::Tensor& w_hh,
                           const std::optional<at::Tensor>& bias,
                           const std::optional<at::Tensor>& lengths, bool save,
                           const LstmForwardStep& step);

// Returns dx, dh0, dc0, dw_ih, dw_hh, dbias (dbias (D*4H) even without a bias).
Tensor6 lstm_layer_backward(const at::Tensor& grad_output, const at::Tensor& grad_hn,
                            const at::Tensor& grad_cn, const at::Tensor& x,
                            const at::Tensor& w_ih, const at::Tensor& w_hh,
                            const std::optional<at::Tensor>& lengths, const at::Tensor& acts,
                            const at::Tensor& hs, const at::Tensor& cs,
                            const LstmBackwardStep& step);

// One cell step: x (N, I), h, c (N, H), w_ih (4H, I), w_hh (4H, H), bias (4H) or none;
// w_cat none or (4H, I+H) = [w_ih | w_hh] (then the gates are ONE GEMM on [x | h]).
// Returns h' (N, H), c' (N, H) and the gate activations (N, 4H) for backward.
Tensor3 lstm_cell_forward(const at::Tensor& x, const at::Tensor& h, const at::Tensor& c,
                          const at::Tensor& w_ih, const at::Tensor& w_hh,
                          const std::optional<at::Tensor>& bias,
                          const std::optional<at::Tensor>& w_cat, const LstmForwardStep& step);

// Returns dx, dh, dc, dw_ih, dw_hh, dbias; with w_cat, dx and dh come from one GEMM.
Tensor6 lstm_cell_backward(const at::Tensor& grad_h, const at::Tensor& grad_c,
                           const at::Tensor& x, const at::Tensor& h, const at::Tensor& c,
                           const at::Tensor& w_ih, const at::Tensor& w_hh,
                           const at::Tensor& acts, const std::optional<at::Tensor>& w_cat,
                           const LstmBackwardStep& step);

}  // namespace fastcrnn::ops
