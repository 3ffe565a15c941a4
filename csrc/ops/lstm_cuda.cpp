// CUDA registrations of the fused LSTM ops: device guard, current stream, the pointwise step
// kernels of kernels/lstm_cuda.cu; the time loop and the cuBLAS GEMMs (through ATen, on the
// current stream) are the shared ones of ops/lstm_recurrence.cpp. No host synchronisation.
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "ops/lstm.h"

namespace fastcrnn::ops {
namespace {

void* current_stream(const at::Tensor& t) {
  return c10::cuda::getCurrentCUDAStream(t.device().index()).stream();
}

// A step launcher on `stream`: the torch-free kernels report launch errors as std::exception,
// which becomes a c10::Error (a Python RuntimeError) here.
template <typename Params>
std::function<void(const Params&)> on_stream(void (*launch)(const Params&, void*), void* stream) {
  return [launch, stream](const Params& p) {
    try {
      launch(p, stream);
    } catch (const std::exception& e) {
      TORCH_CHECK(false, e.what());
    }
  };
}

LstmForwardStep forward_step(void* stream) { return on_stream(&lstm_forward_step_cuda, stream); }

LstmBackwardStep backward_step(void* stream) { return on_stream(&lstm_backward_step_cuda, stream); }

Tensor6 layer_cuda(const at::Tensor& x, const at::Tensor& h0, const at::Tensor& c0,
                   const at::Tensor& w_ih, const at::Tensor& w_hh,
                   const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& lengths,
                   bool save) {
  const c10::cuda::CUDAGuard guard(x.device());
  return lstm_layer_forward(x, h0, c0, w_ih, w_hh, bias, lengths, save,
                            forward_step(current_stream(x)))
      .as_tuple();
}

Tensor6 layer_backward_cuda(const at::Tensor& grad_output, const at::Tensor& grad_hn,
                            const at::Tensor& grad_cn, const at::Tensor& x, const at::Tensor& w_ih,
                            const at::Tensor& w_hh, const std::optional<at::Tensor>& lengths,
                            const at::Tensor& acts, const at::Tensor& hs, const at::Tensor& cs) {
  const c10::cuda::CUDAGuard guard(x.device());
  return lstm_layer_backward(grad_output, grad_hn, grad_cn, x, w_ih, w_hh, lengths, acts, hs, cs,
                             backward_step(current_stream(x)))
      .as_tuple();
}

Tensor3 cell_cuda(const at::Tensor& x, const at::Tensor& h, const at::Tensor& c,
                  const at::Tensor& w_ih, const at::Tensor& w_hh,
                  const std::optional<at::Tensor>& bias) {
  const c10::cuda::CUDAGuard guard(x.device());
  return lstm_cell_forward(x, h, c, w_ih, w_hh, bias, forward_step(current_stream(x))).as_tuple();
}

Tensor6 cell_backward_cuda(const at::Tensor& grad_h, const at::Tensor& grad_c, const at::Tensor& x,
                           const at::Tensor& h, const at::Tensor& c, const at::Tensor& w_ih,
                           const at::Tensor& w_hh, const at::Tensor& acts) {
  const c10::cuda::CUDAGuard guard(x.device());
  return lstm_cell_backward(grad_h, grad_c, x, h, c, w_ih, w_hh, acts,
                            backward_step(current_stream(x)))
      .as_tuple();
}

}  // namespace

TORCH_LIBRARY_IMPL(fastcrnn, CUDA, m) {
  m.impl("lstm_layer", &layer_cuda);
  m.impl("lstm_layer_backward", &layer_backward_cuda);
  m.impl("lstm_cell", &cell_cuda);
  m.impl("lstm_cell_backward", &cell_backward_cuda);
}

}  // namespace fastcrnn::ops
