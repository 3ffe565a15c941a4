// Small device helpers shared by the CUDA kernel files. Torch-free.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "kernels/common.h"

namespace fastcrnn::cuda {

template <typename T>
__device__ __forceinline__ float to_acc(T x) {
  return static_cast<float>(x);
}
__device__ __forceinline__ double to_acc(double x) { return x; }
__device__ __forceinline__ float to_acc(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_acc(__nv_bfloat16 x) { return __bfloat162float(x); }

// The inverse of to_acc: an accumulator value rounded to the storage type.
template <typename T>
__device__ __forceinline__ T from_acc(float v) {
  return static_cast<T>(v);
}
template <>
__device__ __forceinline__ __half from_acc<__half>(float v) {
  return __float2half(v);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_acc<__nv_bfloat16>(float v) {
  return __float2bfloat16(v);
}
template <typename T>
__device__ __forceinline__ T from_acc(double v) {
  return static_cast<T>(v);
}

template <typename T>
struct AccType {
  using type = float;
};
template <>
struct AccType<double> {
  using type = double;
};

// Launch errors become C++ exceptions, which ops/ turns into Python RuntimeErrors.
inline void check_launch(const char* what) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess)
    throw std::runtime_error(std::string("fastcrnn: CUDA launch of ") + what +
                             " failed: " + cudaGetErrorString(err));
}

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace fastcrnn::cuda

// Instantiates `body` with scalar_t set to the CUDA type of `dtype`.
#define FASTCRNN_CUDA_DTYPE_SWITCH(dtype, ...) \
  switch (dtype) {                             \
    case ::fastcrnn::Dtype::kFloat32: {        \
      using scalar_t = float;                  \
      __VA_ARGS__;                             \
      break;                                   \
    }                                          \
    case ::fastcrnn::Dtype::kFloat64: {        \
      using scalar_t = double;                 \
      __VA_ARGS__;                             \
      break;                                   \
    }                                          \
    case ::fastcrnn::Dtype::kFloat16: {        \
      using scalar_t = __half;                 \
      __VA_ARGS__;                             \
      break;                                   \
    }                                          \
    case ::fastcrnn::Dtype::kBFloat16: {       \
      using scalar_t = __nv_bfloat16;          \
      __VA_ARGS__;                             \
      break;                                   \
    }                                          \
  }
