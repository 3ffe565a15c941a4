// The bounded cache of large CPU blocks behind empty_cached (see buffer_cache.h).
//
// A request takes the smallest cached block that holds it with at most 25% to spare (batches of
// varying length still reuse blocks), else new memory. Released blocks wait in the cache up to
// its byte limit; beyond it the largest go back to the system, so sizes that keep changing
// cannot pin more than the limit. Tensors keep the cache's allocator as their storage's
// allocator, so resize_() and the rest of the storage API work as with at::empty.
#include "ops/buffer_cache.h"

#include <ATen/EmptyTensor.h>
#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/alloc_cpu.h>
#include <pthread.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <vector>

namespace fastcrnn::ops {
namespace {

constexpr size_t kCachedMinBytes = size_t(64) << 10;
constexpr size_t kDefaultLimitBytes = size_t(256) << 20;
constexpr size_t kPage = 4096;

size_t limit_from_env() {
  const char* mb = std::getenv("FASTCRNN_CPU_CACHE_MB");
  if (mb == nullptr || *mb == '\0') return kDefaultLimitBytes;
  char* end = nullptr;
  const long long v = std::strtoll(mb, &end, 10);
  TORCH_CHECK_VALUE(end != mb && *end == '\0' && v >= 0 && v <= (1LL << 30),
                    "FASTCRNN_CPU_CACHE_MB must be a whole number of MiB in [0, 2^30], got '", mb,
                    "'");
  return static_cast<size_t>(v) << 20;
}

struct Block {
  void* ptr;
  size_t bytes;  // what the block holds (at least what was asked for)
};

class BlockCache {
 public:
  explicit BlockCache(size_t limit) : limit_(limit) {}

  // Lock-free, so that a forked child can read it whatever state the mutex was left in.
  size_t limit() const { return limit_.load(std::memory_order_relaxed); }

  // A cached block for `bytes`, or {nullptr, 0}.
  Block take(size_t bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = free_.lower_bound(bytes);
    if (it == free_.end() || it->first > bytes + bytes / 4) return {nullptr, 0};
    const Block block{it->second, it->first};
    free_.erase(it);
    held_ -= block.bytes;
    return block;
  }

  void give(const Block& block) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      free_.emplace(block.bytes, block.ptr);
      held_ += block.bytes;
    }
    shrink_to(limit());
  }

  // Limit 0 empties the cache and turns it off.
  void set_limit(size_t limit) {
    limit_.store(limit, std::memory_order_relaxed);
    shrink_to(limit);
  }

  void empty() { shrink_to(0); }

  std::pair<size_t, size_t> held_and_limit() {
    std::lock_guard<std::mutex> lock(mu_);
    return {held_, limit()};
  }

 private:
  // Returns the largest held blocks to the system until at most `keep` bytes are held; the
  // frees run outside the lock.
  void shrink_to(size_t keep) {
    std::vector<void*> evicted;
    {
      std::lock_guard<std::mutex> lock(mu_);
      while (held_ > keep) {
        auto largest = std::prev(free_.end());
        held_ -= largest->first;
        evicted.push_back(largest->second);
        free_.erase(largest);
      }
    }
    for (void* p : evicted) c10::free_cpu(p);
  }

  std::mutex mu_;
  std::multimap<size_t, void*> free_;
  size_t held_ = 0;
  std::atomic<size_t> limit_;
};

// Never destroyed: tensors may be released during static destruction. A forked child (a
// DataLoader worker) starts with a new, empty cache, since another thread of the parent may
// have held the mutex at the fork; the parent's blocks stay with the parent.
BlockCache* cache_instance = nullptr;

BlockCache& cache() {
  static const bool installed = [] {
    cache_instance = new BlockCache(limit_from_env());
    pthread_atfork(nullptr, nullptr,
                   [] { cache_instance = new BlockCache(cache_instance->limit()); });
    return true;
  }();
  (void)installed;
  return *cache_instance;
}

void release(void* ctx) {
  auto* block = static_cast<Block*>(ctx);
  cache().give(*block);
  delete block;
}

class CachingCpuAllocator final : public c10::Allocator {
 public:
  c10::DataPtr allocate(size_t n) override {
    if (n < kCachedMinBytes || cache().limit() == 0) return c10::GetCPUAllocator()->allocate(n);
    const size_t bytes = (n + kPage - 1) / kPage * kPage;
    Block block = cache().take(bytes);
    if (block.ptr == nullptr) block = {c10::alloc_cpu(bytes), bytes};
    return {block.ptr, new Block(block), &release, c10::Device(c10::DeviceType::CPU)};
  }

  void copy_data(void* dest, const void* src, std::size_t count) const override {
    std::memcpy(dest, src, count);
  }
};

}  // namespace

at::Tensor empty_cached(at::IntArrayRef sizes, const at::TensorOptions& opts) {
  if (!opts.device().is_cpu()) return at::empty(sizes, opts);
  static auto* const allocator = new CachingCpuAllocator();  // outlives every tensor
  return at::detail::empty_generic(sizes, allocator, c10::DispatchKeySet(c10::DispatchKey::CPU),
                                   c10::typeMetaToScalarType(opts.dtype()), std::nullopt);
}

at::Tensor copy_cached(const at::Tensor& t, at::ScalarType dtype) {
  at::Tensor out = empty_cached(t.sizes(), t.options().dtype(dtype));
  out.copy_(t);
  return out;
}

std::pair<size_t, size_t> cpu_cache_held_and_limit() { return cache().held_and_limit(); }

void set_cpu_cache_limit(size_t bytes) { cache().set_limit(bytes); }

void empty_cpu_cache() { cache().empty(); }

}  // namespace fastcrnn::ops
