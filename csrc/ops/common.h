// Helpers shared by the torch-facing op files.
#pragma once
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <initializer_list>

#include "kernels/common.h"

namespace fastcrnn::ops {

// Maps a floating tensor dtype onto the kernels' Dtype; anything else is a TypeError naming `arg`.
inline Dtype kernel_dtype(const at::Tensor& t, const char* arg) {
  switch (t.scalar_type()) {
    case at::kFloat:
      return Dtype::kFloat32;
    case at::kDouble:
      return Dtype::kFloat64;
    case at::kHalf:
      return Dtype::kFloat16;
    case at::kBFloat16:
      return Dtype::kBFloat16;
    default:
      TORCH_CHECK_TYPE(false, arg, " must be float32, float64, float16 or bfloat16, got ",
                       t.scalar_type());
  }
}

// kernel_dtype for the kernels that take float32 / float64 only (the CPU convolutions and
// packed-weight products), on the CPU; anything else raises naming `arg`.
inline Dtype cpu_float_dtype(const at::Tensor& t, const char* arg) {
  TORCH_CHECK_VALUE(t.device().is_cpu(), arg, " must be a CPU tensor, got ", t.device());
  TORCH_CHECK_TYPE(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, arg,
                   " must be float32 or float64, got ", t.scalar_type());
  return t.scalar_type() == at::kDouble ? Dtype::kFloat64 : Dtype::kFloat32;
}

// A 1-D integer lengths tensor of `count` entries on `device`, returned as contiguous int64.
inline at::Tensor checked_lengths(const at::Tensor& lengths, int64_t count,
                                  const at::Device& device, const char* arg) {
  TORCH_CHECK_TYPE(lengths.scalar_type() == at::kLong || lengths.scalar_type() == at::kInt, arg,
                   " must be an int32 or int64 tensor, got ", lengths.scalar_type());
  TORCH_CHECK_VALUE(lengths.dim() == 1, arg, " must be 1-D, got shape ", lengths.sizes());
  TORCH_CHECK_VALUE(lengths.size(0) == count, arg, " must have one entry per batch element (",
                    count, "), got ", lengths.size(0));
  TORCH_CHECK_VALUE(lengths.device() == device, arg, " must be on ", device, ", got ",
                    lengths.device());
  return lengths.to(at::kLong).contiguous();
}

// True when every entry of a 1-D int64 tensor lies in [lo, hi]. On CUDA this synchronises.
inline bool all_within(const at::Tensor& values, int64_t lo, int64_t hi) {
  if (values.numel() == 0) return true;
  return (values.ge(lo).logical_and(values.le(hi))).all().item<bool>();
}

// The typed dispatcher handle of a registered op, e.g. typed_op<Sig>("fastcrnn::lstm_cell"); the
// autograd kernels keep theirs in a function-local static (looked up once).
template <typename Sig>
c10::TypedOperatorHandle<Sig> typed_op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Sig>();
}

// True when autograd must record a graph: grad mode is on and a (non-null) input requires grad.
inline bool records_grad(std::initializer_list<const at::Tensor*> inputs) {
  if (!at::GradMode::is_enabled()) return false;
  for (const at::Tensor* t : inputs)
    if (t != nullptr && t->requires_grad()) return true;
  return false;
}

}  // namespace fastcrnn::ops
