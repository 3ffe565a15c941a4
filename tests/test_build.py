"""The build itself: build_info and the import-time checks."""

import os
import sys

import pytest
import torch

import fastcrnn


def test_build_info_fields():
    info = fastcrnn.build_info()
    assert info["version"] == fastcrnn.__version__
    assert info["torch_version"].split("+")[0] == torch.__version__.split("+")[0]
    assert isinstance(info["cuda"], bool)
    assert info["openmp"] is True, "the CPU kernels must be compiled with OpenMP"
    assert "default" in info["cpu_isas_built"]
    assert info["cpu_isa"] in info["cpu_isas_built"]
    assert info["cplusplus"] >= 201703
    if info["cuda"]:
        assert info["cuda_archs"], "a CUDA build names its archs"


def test_ci_builds_cuda_kernels():
    """CI compiles and links the CUDA kernels even without a GPU (FASTCRNN_EXPECT_CUDA=1)."""
    if os.environ.get("FASTCRNN_EXPECT_CUDA") == "1":
        assert fastcrnn.build_info()["cuda"], "expected a CUDA build"
    if torch.cuda.is_available():
        assert fastcrnn.build_info()["cuda"], "a GPU is present but the CUDA kernels are missing"


def test_ops_are_registered():
    assert hasattr(torch.ops.fastcrnn, "greedy_decode")


def test_missing_extension_gives_rebuild_instructions(monkeypatch):
    """Without the compiled module, loading it says how to rebuild (no bare error)."""
    import fastcrnn._ext as ext

    monkeypatch.delattr(fastcrnn, "_C", raising=False)
    monkeypatch.setitem(sys.modules, "fastcrnn._C", None)  # makes the import fail
    with pytest.raises(ImportError, match="could not be loaded") as exc:
        ext._load()
    assert "pip install --no-build-isolation -e ." in str(exc.value)


def test_version_mismatch_is_an_import_error(monkeypatch):
    import fastcrnn._ext as ext

    real = ext._C.build_info

    class FakeC:
        @staticmethod
        def build_info():
            return dict(real(), torch_version="1.0.0")

    monkeypatch.setattr(ext, "_C", FakeC)
    monkeypatch.setitem(sys.modules, "fastcrnn._C", FakeC)
    monkeypatch.setattr(fastcrnn, "_C", FakeC, raising=False)
    with pytest.raises(ImportError, match="built against torch 1.0.0") as exc:
        ext._load()
    assert "pip install --no-build-isolation -e ." in str(exc.value)
