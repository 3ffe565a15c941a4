// Fresh CPU buffers for the ops' large outputs and workspaces without fresh pages.
#pragma once
#include <ATen/ATen.h>

#include <utility>

namespace fastcrnn::ops {

// at::empty(sizes, opts), except that a CPU tensor of at least 64 KiB takes its memory from a
// bounded cache of blocks that earlier such tensors released. Why: glibc serves blocks this
// large from mmap or from a heap it trims when they are freed, so each new block is fresh pages
// and every page costs a fault on first write, a cost that grows with the buffer while the
// kernels' work per byte is small (benchmarks/cache_effect.py measures it). Other devices:
// at::empty (CUDA has its own caching allocator).
at::Tensor empty_cached(at::IntArrayRef sizes, const at::TensorOptions& opts);

// A contiguous copy of `t` converted to `dtype`, in an empty_cached buffer: for the kernels'
// accumulators, which they overwrite.
at::Tensor copy_cached(const at::Tensor& t, at::ScalarType dtype);

// (bytes held now by released blocks waiting for reuse, the limit on them). The limit starts at
// 256 MiB, or FASTCRNN_CPU_CACHE_MB; 0 turns the cache off.
std::pair<size_t, size_t> cpu_cache_held_and_limit();
void set_cpu_cache_limit(size_t bytes);
// Returns every held block to the system (tensors in use keep theirs).
void empty_cpu_cache();

}  // namespace fastcrnn::ops
