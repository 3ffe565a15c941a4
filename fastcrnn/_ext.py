"""Loads the compiled extension fastcrnn._C, which registers the ops in torch.ops.fastcrnn."""

import torch

_REBUILD = (
    "Rebuild it against the installed torch {torch}: from the fastcrnn source tree run "
    "`pip install --no-build-isolation -e .` (add FASTCRNN_CPU_ONLY=1 for a quick "
    "CPU-only build)."
)


def _release(version: str) -> str:
    return version.split("+")[0]


def _load():
    try:
        from fastcrnn import _C
    except (ImportError, OSError) as exc:
        raise ImportError(
            "fastcrnn's compiled extension fastcrnn._C could not be loaded ("
            f"{exc}). " + _REBUILD.format(torch=torch.__version__)
        ) from exc
    built_against = _C.build_info()["torch_version"]
    if _release(built_against) != _release(torch.__version__):
        raise ImportError(
            f"fastcrnn._C was built against torch {built_against} but torch "
            f"{torch.__version__} is installed. " + _REBUILD.format(torch=torch.__version__)
        )
    return _C


_C = _load()


def build_info() -> dict:
    """How the extension was built: versions, CUDA archs, compiler, OpenMP, CPU ISAs."""
    info = dict(_C.build_info())
    info["cpu_isas_built"] = info["cpu_isas_built"].split(",")
    info["cuda_archs"] = [a for a in info["cuda_archs"].split(";") if a]
    info["torch_parallel_backend"] = (
        torch.__config__.parallel_info().split("ATen parallel backend: ")[-1].split("\n")[0].strip()
    )
    return info
