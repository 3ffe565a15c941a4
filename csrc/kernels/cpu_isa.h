// Run-time choice between CPU kernels compiled for several instruction sets.
//
// setup.py compiles each kernels/*_cpu.cpp once per ISA with -DFASTCRNN_ISA_NS=isa_<name>, so
// every kernel exists as fastcrnn::cpu::isa_default::f, isa_avx2::f and isa_avx512::f.
// FASTCRNN_CPU_DISPATCH(f, args...) calls the best one this CPU supports (or the one named by
// the FASTCRNN_CPU_ISA environment variable, which tests use to cover every variant).
#pragma once

namespace fastcrnn::cpu {

enum class Isa : int { kDefault = 0, kAvx2 = 1, kAvx512 = 2 };

Isa active_isa();  // chosen once, on first use
const char* isa_name(Isa isa);

}  // namespace fastcrnn::cpu

// Declares one kernel function in every ISA namespace.
#define FASTCRNN_DECLARE_CPU_KERNEL(ret, name, params) \
  namespace fastcrnn::cpu::isa_default {               \
  ret name params;                                     \
  }                                                    \
  namespace fastcrnn::cpu::isa_avx2 {                  \
  ret name params;                                     \
  }                                                    \
  namespace fastcrnn::cpu::isa_avx512 {                \
  ret name params;                                     \
  }

#if defined(FASTCRNN_HAVE_ISA_AVX512)
#define FASTCRNN_DISPATCH_AVX512_(name, ...) \
  case ::fastcrnn::cpu::Isa::kAvx512:        \
    return ::fastcrnn::cpu::isa_avx512::name(__VA_ARGS__);
#else
#define FASTCRNN_DISPATCH_AVX512_(name, ...)
#endif
#if defined(FASTCRNN_HAVE_ISA_AVX2)
#define FASTCRNN_DISPATCH_AVX2_(name, ...) \
  case ::fastcrnn::cpu::Isa::kAvx2:        \
    return ::fastcrnn::cpu::isa_avx2::name(__VA_ARGS__);
#else
#define FASTCRNN_DISPATCH_AVX2_(name, ...)
#endif

#define FASTCRNN_CPU_DISPATCH(name, ...)                        \
  do {                                                          \
    switch (::fastcrnn::cpu::active_isa()) {                    \
      FASTCRNN_DISPATCH_AVX512_(name, __VA_ARGS__)              \
      FASTCRNN_DISPATCH_AVX2_(name, __VA_ARGS__)                \
      default:                                                  \
        return ::fastcrnn::cpu::isa_default::name(__VA_ARGS__); \
    }                                                           \
  } while (0)
