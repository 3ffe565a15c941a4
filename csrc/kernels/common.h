// Torch-free types shared by ops/ (torch-facing glue) and kernels/ (compute on raw pointers).
#pragma once
#include <cstdint>

namespace fastcrnn {

// The floating dtypes our kernels accept; ops/ maps at::ScalarType onto this.
enum class Dtype : int { kFloat32 = 0, kFloat64 = 1, kFloat16 = 2, kBFloat16 = 3 };

}  // namespace fastcrnn
