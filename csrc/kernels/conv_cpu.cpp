// Winograd F(2x2, 3x3) transforms on the CPU (the algorithm and layouts in conv.h). Tiles run in
// parallel; within a tile the channels are vectorised, which channels-last storage makes
// contiguous. Compiled once per instruction set (see cpu_isa.h).
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>

#include "kernels/conv.h"

namespace fastcrnn::cpu::FASTCRNN_ISA_NS {
namespace {

using at::vec::Vectorized;

// Enough tiles per task that the scheduling cost stays small next to 16 channel-rows of work.
constexpr int64_t kTileGrain = 16;

template <typename scalar_t>
void input_transform(const Winograd3x3Params& p) {
  using Vec = Vectorized<scalar_t>;
  const auto* x = static_cast<const scalar_t*>(p.input);
  auto* v = static_cast<scalar_t*>(p.transformed_input);
  const int64_t C = p.C, H = p.H, W = p.W, P = p.P;
  const int64_t tiles = p.tiles_h * p.tiles_w;
  at::parallel_for(0, P, kTileGrain, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t n = (p.first_tile + t) / tiles, r = (p.first_tile + t) % tiles;
      const int64_t y0 = 2 * (r / p.tiles_w) - 1, x0 = 2 * (r % p.tiles_w) - 1;
      const scalar_t* pixel[4][4];
      for (int i = 0; i < 4; ++i)
        for (int j = 0; j < 4; ++j) {
          const int64_t y = y0 + i, xx = x0 + j;
          pixel[i][j] =
              (y >= 0 && y < H && xx >= 0 && xx < W) ? x + ((n * H + y) * W + xx) * C : nullptr;
        }
      for (int64_t c = 0; c < C; c += Vec::size()) {
        const int count = static_cast<int>(std::min<int64_t>(Vec::size(), C - c));
        Vec d[4][4];
        for (int i = 0; i < 4; ++i)
          for (int j = 0; j < 4; ++j)
            d[i][j] = pixel[i][j] ? Vec::loadu(pixel[i][j] + c, count) : Vec(scalar_t(0));
        // B^T d: rows (d0 - d2, d1 + d2, d2 - d1, d1 - d3), then the same on the columns.
        Vec s[4][4];
        for (int j = 0; j < 4; ++j) {
          s[0][j] = d[0][j] - d[2][j];
          s[1][j] = d[1][j] + d[2][j];
          s[2][j] = d[2][j] - d[1][j];
          s[3][j] = d[1][j] - d[3][j];
        }
        for (int i = 0; i < 4; ++i) {
          const Vec out[4] = {s[i][0] - s[i][2], s[i][1] + s[i][2], s[i][2] - s[i][1],
                              s[i][1] - s[i][3]};
          for (int j = 0; j < 4; ++j) out[j].store(v + ((i * 4 + j) * P + t) * C + c, count);
        }
      }
    }
  });
}

template <typename scalar_t>
void weight_transform(const Winograd3x3Params& p) {
  const auto* g = static_cast<const scalar_t*>(p.weight);
  auto* u = static_cast<scalar_t*>(p.transformed_weight);
  const int64_t C = p.C, K = p.K;
  const scalar_t half(0.5);
  at::parallel_for(0, K, 1, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k)
      for (int64_t c = 0; c < C; ++c) {
        const scalar_t* f = g + (k * C + c) * 9;
        // G f: rows (f0, (f0 + f1 + f2) / 2, (f0 - f1 + f2) / 2, f2), then G^T on the columns.
        scalar_t s[4][3];
        for (int j = 0; j < 3; ++j) {
          s[0][j] = f[j];
          s[1][j] = half * (f[j] + f[3 + j] + f[6 + j]);
          s[2][j] = half * (f[j] - f[3 + j] + f[6 + j]);
          s[3][j] = f[6 + j];
        }
        for (int i = 0; i < 4; ++i) {
          const scalar_t out[4] = {s[i][0], half * (s[i][0] + s[i][1] + s[i][2]),
                                   half * (s[i][0] - s[i][1] + s[i][2]), s[i][2]};
          for (int j = 0; j < 4; ++j) u[((i * 4 + j) * K + k) * C + c] = out[j];
        }
      }
  });
}

template <typename scalar_t>
void output_transform(const Winograd3x3Params& p) {
  using Vec = Vectorized<scalar_t>;
  const auto* m = static_cast<const scalar_t*>(p.products);
  const auto* scale = static_cast<const scalar_t*>(p.scale);
  const auto* shift = static_cast<const scalar_t*>(p.shift);
  auto* y = static_cast<scalar_t*>(p.output);
  const int64_t K = p.K, H = p.H, W = p.W, P = p.P;
  const int64_t tiles = p.tiles_h * p.tiles_w;
  const Vec zero(scalar_t(0)), slope(static_cast<scalar_t>(p.negative_slope));
  const bool relu = p.activation && p.negative_slope == 0.0;
  const bool leaky = p.activation && !relu;
  at::parallel_for(0, P, kTileGrain, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t n = (p.first_tile + t) / tiles, r = (p.first_tile + t) % tiles;
      const int64_t y0 = 2 * (r / p.tiles_w), x0 = 2 * (r % p.tiles_w);
      const int rows = static_cast<int>(std::min<int64_t>(2, H - y0));
      const int cols = static_cast<int>(std::min<int64_t>(2, W - x0));
      for (int64_t k = 0; k < K; k += Vec::size()) {
        const int count = static_cast<int>(std::min<int64_t>(Vec::size(), K - k));
        Vec e[4][4];
        for (int i = 0; i < 4; ++i)
          for (int j = 0; j < 4; ++j)
            e[i][j] = Vec::loadu(m + ((i * 4 + j) * P + t) * K + k, count);
        // A^T e: rows (e0 + e1 + e2, e1 - e2 - e3), then the same on the columns.
        Vec s[2][4];
        for (int j = 0; j < 4; ++j) {
          s[0][j] = e[0][j] + e[1][j] + e[2][j];
          s[1][j] = e[1][j] - e[2][j] - e[3][j];
        }
        const Vec a = scale ? Vec::loadu(scale + k, count) : Vec(scalar_t(1));
        const Vec b = shift ? Vec::loadu(shift + k, count) : zero;
        for (int i = 0; i < rows; ++i) {
          Vec out[2] = {s[i][0] + s[i][1] + s[i][2], s[i][1] - s[i][2] - s[i][3]};
          for (int j = 0; j < cols; ++j) {
            Vec o = at::vec::fmadd(out[j], a, b);
            if (relu) o = at::vec::maximum(o, zero);
            if (leaky) o = Vec::blendv(o * slope, o, o > zero);
            o.store(y + ((n * H + y0 + i) * W + x0 + j) * K + k, count);
          }
        }
      }
    }
  });
}

// Output channels per register block: four vectors of accumulators and four of the pooled
// maximum stay in registers beside the broadcast input and the weight vector.
constexpr int kDirectBlock = 4;

template <typename scalar_t>
void conv3x3_direct(const Conv3x3DirectParams& p) {
  using Vec = Vectorized<scalar_t>;
  const auto* x = static_cast<const scalar_t*>(p.input);
  const auto* w = static_cast<const scalar_t*>(p.weight);
  const auto* scale = static_cast<const scalar_t*>(p.scale);
  const auto* shift = static_cast<const scalar_t*>(p.shift);
  auto* y = static_cast<scalar_t*>(p.output);
  const int64_t H = p.H, W = p.W, C = p.C, K = p.K;
  const int64_t Ho = p.max_pool ? H / 2 : H, Wo = p.max_pool ? W / 2 : W;
  const int window = p.max_pool ? 2 : 1;
  const Vec zero(scalar_t(0)), slope(static_cast<scalar_t>(p.negative_slope));
  const bool relu = p.activation && p.negative_slope == 0.0;
  const bool leaky = p.activation && !relu;
  constexpr int64_t V = Vec::size();
  at::parallel_for(0, p.N * Ho, 1, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t n = row / Ho, oy = row % Ho;
      for (int64_t ox = 0; ox < Wo; ++ox) {
        scalar_t* out = y + ((n * Ho + oy) * Wo + ox) * K;
        for (int64_t k0 = 0; k0 < K; k0 += kDirectBlock * V) {
          int counts[kDirectBlock];
          Vec a[kDirectBlock], b[kDirectBlock], best[kDirectBlock];
          for (int j = 0; j < kDirectBlock; ++j) {
            const int64_t k = k0 + j * V;
            counts[j] = static_cast<int>(std::max<int64_t>(0, std::min<int64_t>(V, K - k)));
            a[j] = scale && counts[j] ? Vec::loadu(scale + k, counts[j]) : Vec(scalar_t(1));
            b[j] = shift && counts[j] ? Vec::loadu(shift + k, counts[j]) : zero;
          }
          for (int dy = 0; dy < window; ++dy)
            for (int dx = 0; dx < window; ++dx) {
              const int64_t cy = oy * window + dy, cx = ox * window + dx;
              Vec acc[kDirectBlock];
              for (int j = 0; j < kDirectBlock; ++j) acc[j] = zero;
              for (int ky = 0; ky < 3; ++ky) {
                const int64_t iy = cy + ky - 1;
                if (iy < 0 || iy >= H) continue;
                for (int kx = 0; kx < 3; ++kx) {
                  const int64_t ix = cx + kx - 1;
                  if (ix < 0 || ix >= W) continue;
                  const scalar_t* pixel = x + ((n * H + iy) * W + ix) * C;
                  const scalar_t* taps = w + (ky * 3 + kx) * C * K + k0;
                  for (int64_t c = 0; c < C; ++c) {
                    const Vec v(pixel[c]);
                    for (int j = 0; j < kDirectBlock; ++j)
                      if (counts[j])
                        acc[j] =
                            at::vec::fmadd(v, Vec::loadu(taps + c * K + j * V, counts[j]), acc[j]);
                  }
                }
              }
              for (int j = 0; j < kDirectBlock; ++j) {
                Vec o = at::vec::fmadd(acc[j], a[j], b[j]);
                if (relu) o = at::vec::maximum(o, zero);
                if (leaky) o = Vec::blendv(o * slope, o, o > zero);
                best[j] = (dy == 0 && dx == 0) ? o : at::vec::maximum(best[j], o);
              }
            }
          for (int j = 0; j < kDirectBlock; ++j)
            if (counts[j]) best[j].store(out + k0 + j * V, counts[j]);
        }
      }
    }
  });
}

}  // namespace

void conv3x3_direct_cpu(const Conv3x3DirectParams& p) {
  if (p.dtype == Dtype::kFloat64) return conv3x3_direct<double>(p);
  conv3x3_direct<float>(p);
}

void winograd_input_transform_cpu(const Winograd3x3Params& p) {
  if (p.dtype == Dtype::kFloat64) return input_transform<double>(p);
  input_transform<float>(p);
}

void winograd_weight_transform_cpu(const Winograd3x3Params& p) {
  if (p.dtype == Dtype::kFloat64) return weight_transform<double>(p);
  weight_transform<float>(p);
}

void winograd_output_transform_cpu(const Winograd3x3Params& p) {
  if (p.dtype == Dtype::kFloat64) return output_transform<double>(p);
  output_transform<float>(p);
}

}  // namespace fastcrnn::cpu::FASTCRNN_ISA_NS
