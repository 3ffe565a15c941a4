"""CRNN inference on the CPU: fastcrnn's FrozenCRNN vs plain PyTorch (crnn.pytorch's network,
fastcrnn.reference.ReferenceCRNN, eager, nn.LSTM) vs ONNX Runtime running that plain model's
ONNX export, all with the same weights, on the default CRNN (32, 1, 37, 256) at N=1 W=100,
N=32 W=100 and N=32 W=320, with 1 and 2 threads. Each side returns the (T, N, 37) scores.
First-call latency (building the frozen model / the ONNX Runtime session, and the first batch)
is reported in rows of its own.

pytest-benchmark:  pytest benchmarks/bench_infer.py --benchmark-only
report rows:       python benchmarks/report.py --only infer   (ratios measured in the same run)
"""

import io
import sys
import time

import pytest
import torch

from benchmarks.timing import paired_ms, row
from fastcrnn.nn import CRNN, FrozenCRNN
from fastcrnn.reference import ReferenceCRNN

BATCHES = {"N=1 W=100": (1, 100), "N=32 W=100": (32, 100), "N=32 W=320": (32, 320)}
THREADS = (1, 2)
NCLASS, NH = 37, 256


def plain_model(seed: int = 0) -> ReferenceCRNN:
    """crnn.pytorch's network with random weights and BatchNorm statistics (so that folding
    them is part of the work), in eval mode."""
    torch.manual_seed(seed)
    model = ReferenceCRNN(32, 1, NCLASS, NH)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model.eval()


def frozen_model(plain: ReferenceCRNN) -> FrozenCRNN:
    """fastcrnn's CRNN loaded with the plain model's state dict (the keys are crnn.pytorch's),
    frozen for inference."""
    model = CRNN(32, 1, NCLASS, NH, output="logits")
    model.load_state_dict(plain.state_dict())
    return FrozenCRNN(model.eval())


def onnx_session(plain: ReferenceCRNN, threads: int):
    """An ONNX Runtime session (CPU, `threads` intra-op threads) on the plain model's export
    with dynamic batch and width; ImportError when onnxruntime or onnx is missing."""
    import onnxruntime as ort

    buf = io.BytesIO()
    torch.onnx.export(
        plain,
        (torch.rand(1, 1, 32, 100),),
        buf,
        dynamo=False,
        input_names=["images"],
        output_names=["scores"],
        dynamic_axes={"images": {0: "N", 3: "W"}, "scores": {0: "T", 1: "N"}},
    )
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(buf.getvalue(), options, providers=["CPUExecutionProvider"])


def _images(name: str) -> torch.Tensor:
    N, W = BATCHES[name]
    return torch.rand(N, 1, 32, W, generator=torch.Generator().manual_seed(N * 1000 + W))


def _check_same(ours: torch.Tensor, theirs: torch.Tensor, what: str) -> None:
    err = (ours - theirs).abs().max().item()
    if err > 1e-3:
        raise AssertionError(f"infer {what}: outputs differ by {err}")


@pytest.mark.parametrize("impl", ["fastcrnn", "torch", "onnxruntime"])
@pytest.mark.parametrize("batch", list(BATCHES))
def test_infer(benchmark, batch, impl):
    torch.set_num_threads(2)
    plain = plain_model()
    images = _images(batch)
    if impl == "fastcrnn":
        frozen = frozen_model(plain)
        benchmark(lambda: frozen.logits(images))
    elif impl == "torch":
        with torch.inference_mode():
            benchmark(lambda: plain(images))
    else:
        try:
            session = onnx_session(plain, 2)
        except ImportError as error:
            pytest.skip(f"onnxruntime not installed: {error}")
        feed = {"images": images.numpy()}
        benchmark(lambda: session.run(None, feed))


def _first_call_rows(plain, device):
    """Build + first batch (N=1 W=100), each side from scratch."""
    images = _images("N=1 W=100")
    t0 = time.perf_counter()
    frozen = frozen_model(plain)
    frozen.logits(images)
    ours = (time.perf_counter() - t0) * 1e3
    fresh = plain_model()
    t0 = time.perf_counter()
    with torch.inference_mode():
        fresh(images)
    torch_first = (time.perf_counter() - t0) * 1e3
    rows = [row("infer", "N=1 W=100", "first call", device, ours, "torch", torch_first)]
    try:
        t0 = time.perf_counter()
        session = onnx_session(plain, torch.get_num_threads())
        session.run(None, {"images": images.numpy()})
        ort_first = (time.perf_counter() - t0) * 1e3
        rows.append(row("infer", "N=1 W=100", "first call", device, ours, "onnxruntime", ort_first))
    except ImportError as error:
        print(f"infer: onnxruntime skipped: not installed ({error})", file=sys.stderr)
    return rows


def report_rows(device):
    if torch.device(device).type != "cpu":
        return []  # FrozenCRNN is the CPU serving path
    threads_before = torch.get_num_threads()
    plain = plain_model()
    rows = []
    try:
        for threads in THREADS:
            torch.set_num_threads(threads)
            frozen = frozen_model(plain)
            try:
                session = onnx_session(plain, threads)
            except ImportError as error:
                print(f"infer: onnxruntime skipped: not installed ({error})", file=sys.stderr)
                session = None
            case = f"{threads} thread" + ("s" if threads > 1 else "")
            for name in BATCHES:
                images = _images(name)
                feed = {"images": images.numpy()}
                with torch.inference_mode():
                    ours_out, plain_out = frozen.logits(images), plain(images)
                    _check_same(ours_out, plain_out, f"{name} vs torch")

                    def ours():
                        return frozen.logits(images)

                    def torch_plain():
                        return plain(images)

                    # Small batches get long blocks: a few calls would be timed while the
                    # other side's threads still spin (ONNX Runtime's pool spins after a run),
                    # and a few milliseconds are where this VM's drift weighs most.
                    small = images.shape[0] * images.shape[3] <= 320
                    kw = dict(warmup=5, repeat=30, min_time_s=0.3) if small else dict(repeat=3)
                    ours_ms, ref_ms, ratio = paired_ms(ours, torch_plain, device, **kw)
                    rows.append(
                        row("infer", name, case, device, ours_ms, "torch", ref_ms, ratio=ratio)
                    )
                    if session is not None:
                        _check_same(ours_out, torch.from_numpy(session.run(None, feed)[0]), name)
                        ours_ms, ort_ms, ratio = paired_ms(
                            ours, lambda: session.run(None, feed), device, **kw
                        )
                        rows.append(
                            row(
                                "infer",
                                name,
                                case,
                                device,
                                ours_ms,
                                "onnxruntime",
                                ort_ms,
                                ratio=ratio,
                            )
                        )
        torch.set_num_threads(2)
        rows += _first_call_rows(plain, device)
    finally:
        torch.set_num_threads(threads_before)
    return rows
