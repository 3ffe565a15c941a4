"""Build fastcrnn._C: a CppExtension, or a CUDAExtension when torch has CUDA and nvcc exists.

Environment:
  FASTCRNN_CPU_ONLY=1      never compile CUDA code (fast local iteration)
  TORCH_CUDA_ARCH_LIST     CUDA archs; else FASTCRNN_CUDA_ARCH; default "8.0;9.0+PTX"
  MAX_JOBS                 parallel compile jobs (ninja and the CPU ISA variants)
  CUDA_HOME                CUDA toolkit; defaults to /usr/local/cuda when it holds nvcc

CPU kernels (csrc/kernels/*_cpu.cpp) are compiled once per instruction set (baseline, AVX2,
AVX-512 on x86-64) into separate namespaces; csrc/ops/cpu_isa.cpp picks one at run time.
"""

import glob
import os
import platform
import subprocess
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.abspath(__file__))
if "CUDA_HOME" not in os.environ and os.path.exists("/usr/local/cuda/bin/nvcc"):
    # torch otherwise guesses /usr/local when no GPU driver is present
    os.environ["CUDA_HOME"] = "/usr/local/cuda"

import torch  # noqa: E402
from setuptools import find_packages, setup  # noqa: E402
from torch.utils import cpp_extension  # noqa: E402
from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension  # noqa: E402


def _read_version():
    namespace = {}
    with open(os.path.join(ROOT, "fastcrnn", "version.py")) as f:
        exec(f.read(), namespace)
    return namespace["__version__"]


VERSION = _read_version()
CPU_ONLY = os.environ.get("FASTCRNN_CPU_ONLY", "0") not in ("", "0")
WITH_CUDA = (
    not CPU_ONLY
    and torch.version.cuda is not None
    and cpp_extension.CUDA_HOME is not None
    and os.path.exists(os.path.join(cpp_extension.CUDA_HOME, "bin", "nvcc"))
)
if WITH_CUDA and not os.environ.get("TORCH_CUDA_ARCH_LIST"):
    os.environ["TORCH_CUDA_ARCH_LIST"] = os.environ.get("FASTCRNN_CUDA_ARCH", "8.0;9.0+PTX")
CUDA_ARCHS = os.environ.get("TORCH_CUDA_ARCH_LIST", "") if WITH_CUDA else ""

# (name, flags); the name becomes the namespace fastcrnn::cpu::isa_<name>
if platform.machine().lower() in ("x86_64", "amd64"):
    CPU_ISAS = [
        ("default", []),
        ("avx2", ["-mavx2", "-mfma", "-mf16c", "-mbmi", "-mbmi2", "-mlzcnt"]),
        (
            "avx512",
            [
                "-mavx512f",
                "-mavx512bw",
                "-mavx512vl",
                "-mavx512dq",
                "-mfma",
                "-mf16c",
                "-mbmi",
                "-mbmi2",
                "-mlzcnt",
            ],
        ),
    ]
else:
    CPU_ISAS = [("default", [])]
# ATen's vectorized types pick their implementation from CPU_CAPABILITY_<X>
ATEN_CAPABILITY = {"default": "DEFAULT", "avx2": "AVX2", "avx512": "AVX512"}


def _sources(pattern):
    return sorted(glob.glob(os.path.join("csrc", pattern)))


def _abi_flag():
    return f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}"


class FastcrnnBuild(BuildExtension):
    """BuildExtension that first compiles every CPU kernel once per instruction set."""

    def build_extensions(self):
        objects = self._compile_cpu_kernel_variants()
        for ext in self.extensions:
            ext.extra_objects = list(ext.extra_objects or []) + objects
        super().build_extensions()

    def _compile_cpu_kernel_variants(self):
        out_dir = os.path.join(self.build_temp, "cpu_isa")
        os.makedirs(out_dir, exist_ok=True)
        headers = _sources("kernels/*.h")
        newest_header = max((os.path.getmtime(h) for h in headers), default=0.0)
        include = [f"-I{p}" for p in cpp_extension.include_paths()] + ["-Icsrc"]
        jobs = []
        for src in _sources("kernels/*_cpu.cpp"):
            stem = os.path.splitext(os.path.basename(src))[0]
            for isa, flags in CPU_ISAS:
                obj = os.path.join(out_dir, f"{stem}.{isa}.o")
                cmd = (
                    [
                        os.environ.get("CXX", "c++"),
                        "-c",
                        src,
                        "-o",
                        obj,
                        "-std=c++17",
                        "-O3",
                        "-fPIC",
                        "-fopenmp",
                        "-fvisibility=hidden",
                        _abi_flag(),
                        f"-DFASTCRNN_ISA_NS=isa_{isa}",
                        f"-DCPU_CAPABILITY={ATEN_CAPABILITY[isa]}",
                        f"-DCPU_CAPABILITY_{ATEN_CAPABILITY[isa]}",
                    ]
                    + flags
                    + include
                )
                stale = not os.path.exists(obj) or os.path.getmtime(obj) < max(
                    os.path.getmtime(src), newest_header
                )
                jobs.append((obj, cmd, stale))
        todo = [(obj, cmd) for obj, cmd, stale in jobs if stale]
        workers = int(os.environ.get("MAX_JOBS", os.cpu_count() or 1))

        def run(job):
            obj, cmd = job
            print(" ".join(cmd), flush=True)
            subprocess.check_call(cmd, cwd=ROOT)

        with ThreadPoolExecutor(max(1, workers)) as pool:
            list(pool.map(run, todo))
        return [obj for obj, _, _ in jobs]


def _extension():
    isa_names = [name for name, _ in CPU_ISAS]
    macros = [
        ("FASTCRNN_VERSION", f'"{VERSION}"'),
        ("FASTCRNN_TORCH_VERSION", f'"{torch.__version__}"'),
        ("FASTCRNN_CUDA_ARCHS", f'"{CUDA_ARCHS}"'),
        ("FASTCRNN_CPU_ISAS", '"' + ",".join(isa_names) + '"'),
    ] + [(f"FASTCRNN_HAVE_ISA_{name.upper()}", "1") for name in isa_names]
    cxx = ["-O3", "-fopenmp"]
    sources = [s for s in _sources("ops/*.cpp") if not s.endswith("_cuda.cpp")]
    kwargs = dict(
        name="fastcrnn._C", include_dirs=[os.path.join(ROOT, "csrc")], extra_link_args=["-fopenmp"]
    )
    if WITH_CUDA:
        sources += _sources("ops/*_cuda.cpp") + _sources("kernels/*_cuda.cu")
        macros.append(("FASTCRNN_WITH_CUDA", "1"))
        nvcc = ["-O3", "--expt-relaxed-constexpr", "-lineinfo"]
        return CUDAExtension(
            sources=sources,
            define_macros=macros,
            extra_compile_args={"cxx": cxx, "nvcc": nvcc},
            **kwargs,
        )
    return CppExtension(
        sources=sources, define_macros=macros, extra_compile_args={"cxx": cxx}, **kwargs
    )


# Metadata, dependencies and extras are in pyproject.toml; the version is fastcrnn/version.py's.
setup(
    version=VERSION,
    packages=find_packages(include=["fastcrnn", "fastcrnn.*"]),
    package_data={"fastcrnn": ["py.typed"]},
    ext_modules=[_extension()],
    cmdclass={"build_ext": FastcrnnBuild.with_options(use_ninja=True)},
)
