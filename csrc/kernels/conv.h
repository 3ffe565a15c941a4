// Winograd F(2x2, 3x3) convolution (stride 1, padding 1) on the CPU: the transforms around the
// 16 GEMMs, declared for ops/conv.cpp. Torch-free.
//
// A 3x3 convolution computes each 2x2 block of outputs from a 4x4 block of inputs ("tile"). In
// the Winograd domain that is 16 independent products, one per element e of the 4x4 block, each
// a (P tiles x C) by (C x K) matrix product: 16 * C * K multiplies per tile instead of the
// direct method's 36 * C * K, which is why the convolutions of a CRNN run faster this way.
//   input transform   V[e] = (B^T d B)[e]   for every tile's input block d   (16, P, C)
//   weight transform  U[e] = (G g G^T)[e]   for every (k, c) filter g         (16, K, C)
//   products          M[e] = V[e] U[e]^T                                       (16, P, K)
//   output transform  y = epilogue(A^T M A), a 2x2 block per tile, cut at the image border
// Tiles run over (n, tile row, tile column) with ceil(H / 2) x ceil(W / 2) tiles per image; the
// input block of tile (ty, tx) starts at pixel (2 ty - 1, 2 tx - 1), zeros outside the image.
// The epilogue is act(scale[k] * y + shift[k]): a folded BatchNorm and the conv bias go in
// scale / shift, act is identity, ReLU (slope 0) or LeakyReLU(slope).
// Images are channels-last: element (n, y, x, c) at ((n * H + y) * W + x) * C + c.
#pragma once
#include <cstdint>

#include "kernels/common.h"
#include "kernels/cpu_isa.h"

namespace fastcrnn {

struct Winograd3x3Params {
  Dtype dtype = Dtype::kFloat32;       // float32 or float64 (every pointer below has this type)
  int64_t N = 0, H = 0, W = 0;         // images and their height, width (output size = input size)
  int64_t C = 0, K = 0;                // input and output channels
  int64_t tiles_h = 0, tiles_w = 0;    // ceil(H / 2), ceil(W / 2)
  int64_t first_tile = 0, P = 0;       // this call's tiles: [first_tile, first_tile + P) of all
                                       // N * tiles_h * tiles_w
  const void* input = nullptr;         // (N, H, W, C)
  void* transformed_input = nullptr;   // (16, P, C): this call's tiles
  const void* weight = nullptr;        // (K, C, 3, 3)
  void* transformed_weight = nullptr;  // (16, K, C)
  const void* products = nullptr;      // (16, P, K)
  const void* scale = nullptr;         // (K,) or null (1)
  const void* shift = nullptr;         // (K,) or null (0)
  bool activation = false;             // apply act after scale / shift
  double negative_slope = 0.0;         // act's slope below 0 (0: ReLU)
  void* output = nullptr;              // (N, H, W, K)
};

// A direct 3x3 convolution (stride 1, padding 1) for inputs with few channels, such as a CRNN's
// grey-image first layer, where neither Winograd's transforms nor a GEMM has enough work per
// pixel to pay off. Each output pixel is vectorised over the output channels; the epilogue is the
// one above. With max_pool, the 2x2 stride-2 max-pool that follows is fused in: the kernel
// writes only the pooled image, H / 2 x W / 2 (floor), a quarter of the memory traffic.
struct Conv3x3DirectParams {
  Dtype dtype = Dtype::kFloat32;
  int64_t N = 0, H = 0, W = 0, C = 0, K = 0;
  const void* input = nullptr;   // (N, H, W, C)
  const void* weight = nullptr;  // (3, 3, C, K): tap-major, output channels innermost
  const void* scale = nullptr;   // (K,) or null
  const void* shift = nullptr;   // (K,) or null
  bool activation = false;
  double negative_slope = 0.0;
  bool max_pool = false;
  void* output = nullptr;  // (N, H, W, K), or (N, H / 2, W / 2, K) with max_pool
};

}  // namespace fastcrnn

FASTCRNN_DECLARE_CPU_KERNEL(void, conv3x3_direct_cpu, (const ::fastcrnn::Conv3x3DirectParams& p))
FASTCRNN_DECLARE_CPU_KERNEL(void, winograd_input_transform_cpu,
                            (const ::fastcrnn::Winograd3x3Params& p))
FASTCRNN_DECLARE_CPU_KERNEL(void, winograd_weight_transform_cpu,
                            (const ::fastcrnn::Winograd3x3Params& p))
FASTCRNN_DECLARE_CPU_KERNEL(void, winograd_output_transform_cpu,
                            (const ::fastcrnn::Winograd3x3Params& p))
