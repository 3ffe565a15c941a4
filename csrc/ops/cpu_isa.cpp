#include "kernels/cpu_isa.h"

#include <cstdlib>
#include <cstring>

namespace fastcrnn::cpu {
namespace {

bool built(Isa isa) {
  switch (isa) {
#if defined(FASTCRNN_HAVE_ISA_AVX512)
    case Isa::kAvx512:
      return true;
#endif
#if defined(FASTCRNN_HAVE_ISA_AVX2)
    case Isa::kAvx2:
      return true;
#endif
    case Isa::kDefault:
      return true;
    default:
      return false;
  }
}

bool supported(Isa isa) {
#if defined(__x86_64__) || defined(_M_X64)
  __builtin_cpu_init();
  switch (isa) {
    case Isa::kAvx512:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
             __builtin_cpu_supports("fma");
    case Isa::kAvx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
             __builtin_cpu_supports("f16c") && __builtin_cpu_supports("bmi2");
    default:
      return true;
  }
#else
  return isa == Isa::kDefault;
#endif
}

Isa choose() {
  // FASTCRNN_CPU_ISA caps the choice (like ATEN_CPU_CAPABILITY); it never picks an ISA the CPU
  // lacks, so a wrong setting is slow, not a crash.
  Isa cap = Isa::kAvx512;
  if (const char* env = std::getenv("FASTCRNN_CPU_ISA")) {
    if (std::strcmp(env, "default") == 0)
      cap = Isa::kDefault;
    else if (std::strcmp(env, "avx2") == 0)
      cap = Isa::kAvx2;
  }
  for (int i = static_cast<int>(cap); i > 0; --i) {
    Isa isa = static_cast<Isa>(i);
    if (built(isa) && supported(isa)) return isa;
  }
  return Isa::kDefault;
}

}  // namespace

Isa active_isa() {
  static const Isa isa = choose();
  return isa;
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kAvx512:
      return "avx512";
    case Isa::kAvx2:
      return "avx2";
    default:
      return "default";
  }
}

}  // namespace fastcrnn::cpu
