// Fused LSTM pointwise kernels: launcher declarations shared by ops/ and kernels/. Torch-free.
//
// Gate layout is nn.LSTM's: a row of 4H pre-activations holds i, f, g, o (each H wide).
// The GEMMs (x·W_ihᵀ, h·W_hhᵀ, dgates·W, dgatesᵀ·x) run in ops/ through ATen; these kernels do
// everything elementwise of one time step, for one or two directions in one launch.
//
// Storage dtype `dtype` (float32/float64/float16/bfloat16) holds gates, h and outputs;
// the cell state c and every accumulation use the accumulate type (float64 for float64 inputs,
// float32 otherwise): buffers documented as "acc" are float or double accordingly.
#pragma once
#include <cstdint>

#include "kernels/common.h"
#include "kernels/cpu_isa.h"

namespace fastcrnn {

constexpr int kLstmMaxDirs = 2;

// One forward step. For each direction d < D, row n < N, unit j < H:
//   valid = lengths == nullptr || t[d] < lengths[n]
//   valid:   i,f,g,o = sigmoid/sigmoid/tanh/sigmoid(gates[d][n*gates_stride + {0,1,2,3}*H + j])
//            c = f*c_prev + i*g;  h = o*tanh(c);  gates <- activations (when save_acts)
//            c_next = c; h_next = h; out = h
//   padded:  c_next = c_prev; h_next = h_prev; out = 0   (gates untouched)
struct LstmForwardParams {
  Dtype dtype = Dtype::kFloat32;
  int64_t N = 0, H = 0, D = 1;
  void* gates[kLstmMaxDirs] = {nullptr, nullptr};  // storage, rows of stride gates_stride
  int64_t gates_stride = 0;
  const void* h_prev[kLstmMaxDirs] = {nullptr, nullptr};  // storage (N, H); only read when padded
  void* h_next[kLstmMaxDirs] = {nullptr, nullptr};        // storage (N, H)
  const void* c_prev[kLstmMaxDirs] = {nullptr, nullptr};  // acc (N, H)
  void* c_next[kLstmMaxDirs] = {nullptr, nullptr};        // acc (N, H)
  void* out[kLstmMaxDirs] = {nullptr, nullptr};  // storage rows of stride out_stride, or null
  int64_t out_stride = 0;
  const int64_t* lengths = nullptr;  // (N,) or null: all valid
  int64_t t[kLstmMaxDirs] = {0, 0};
  bool save_acts = true;
};

// One backward step (the reverse of the above). For each (d, n, j):
//   dh = dh_carry + dh_rec (dh_rec: dgates of the step processed before · W_hh, may be null)
//   padded:  dh_carry = dh; dc unchanged; dgates = 0
//   valid:   dh += dout (may be null); c = f*c_prev + i*g (recomputed in acc precision);
//            dct = dc + dh*o*(1-tanh(c)^2);
//            dgates = (dct*g*i*(1-i), dct*c_prev*f*(1-f), dct*i*(1-g^2), dh*tanh(c)*o*(1-o));
//            dc = dct*f; dh_carry = 0
// after which ops/ computes dh_rec = dgates · W_hh for the next step.
struct LstmBackwardParams {
  Dtype dtype = Dtype::kFloat32;
  int64_t N = 0, H = 0, D = 1;
  const void* acts[kLstmMaxDirs] = {nullptr, nullptr};  // storage activations, rows of acts_stride
  int64_t acts_stride = 0;
  const void* c_prev[kLstmMaxDirs] = {nullptr, nullptr};  // acc (N, H)
  const void* dout[kLstmMaxDirs] = {nullptr, nullptr};    // storage rows of dout_stride, or null
  int64_t dout_stride = 0;
  const void* dh_rec[kLstmMaxDirs] = {nullptr, nullptr};  // storage (N, H), or null
  void* dh_carry[kLstmMaxDirs] = {nullptr, nullptr};      // acc (N, H), in/out
  void* dc[kLstmMaxDirs] = {nullptr, nullptr};            // acc (N, H), in/out
  void* dgates[kLstmMaxDirs] = {nullptr, nullptr};        // storage, rows of dgates_stride
  int64_t dgates_stride = 0;
  const int64_t* lengths = nullptr;
  int64_t t[kLstmMaxDirs] = {0, 0};
};

void lstm_forward_step_cuda(const LstmForwardParams& p, void* cuda_stream);
void lstm_backward_step_cuda(const LstmBackwardParams& p, void* cuda_stream);

}  // namespace fastcrnn

FASTCRNN_DECLARE_CPU_KERNEL(void, lstm_forward_step_cpu, (const ::fastcrnn::LstmForwardParams& p))
FASTCRNN_DECLARE_CPU_KERNEL(void, lstm_backward_step_cpu, (const ::fastcrnn::LstmBackwardParams& p))
