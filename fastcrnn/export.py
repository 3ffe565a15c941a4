"""ONNX export of a CRNN with dynamic batch and width, and reading its greedy-decode outputs.

:func:`export_onnx` writes a model that ONNX Runtime (or any ONNX runtime) runs on batches of
any size and images of any width. The fused LSTMs are written as the standard ONNX ``LSTM`` op:
the export runs on a copy of the model whose LSTMs use their ``backend="torch"`` path
(``torch.lstm`` on the same parameters), which the exporter knows; the caller's model is not
changed. ONNX has no op for the fastcrnn kernels, and the graph needs none.

The graph (``N`` images of width ``W``, ``T = model.output_length(W)`` frames, ``C`` classes):

inputs
    ``images``: (N, nc, imgH, W) float32, preprocessed as in training (grey, height imgH,
    ``x / 127.5 - 1``, padded on the right to the widest image).
    ``widths`` (only with ``include_decode``): (N,) int64, each image's width before padding.
outputs
    ``logits`` (or ``log_probs``, after the model's ``output``): (T, N, C) float32, time-major,
    as the model returns them.
    With ``include_decode`` also the greedy (best-path) decode, per frame, as fixed-size
    (N, T) tensors, since an ONNX graph cannot return a data-dependent number of characters:

    - ``argmax``: (N, T) int64, the best class of each frame (the first on ties, as
      torch.argmax);
    - ``keep``: (N, T) bool, whether the frame starts a character: its argmax is not the blank,
      differs from the previous frame's argmax, and the frame lies within the image's frames;
    - ``max_prob``: (N, T) float32, the softmax probability of the frame's argmax;
    - ``lengths``: (N,) int64, each image's number of frames, ``output_length(widths)``.

    Reading it: the characters of image n are ``argmax[n][keep[n]]``, in order; character k
    starts at frame ``nonzero(keep[n])[k]``; its probability, as ``ctc_greedy_decode``'s
    ``token_probs``, is the largest ``max_prob`` over its run (its first frame and the frames
    after it with the same argmax). :func:`greedy_decoding_from_onnx` does exactly this and
    returns a :class:`fastcrnn.GreedyDecoding`, which a
    :class:`fastcrnn.text.LabelConverter` turns into strings.
"""

import copy
import os
import warnings
from typing import Any, Mapping, Optional, Union

import torch
from torch import nn

from fastcrnn.nn.crnn import CRNN
from fastcrnn.nn.lstm import LSTM
from fastcrnn.ops.decode import GreedyDecoding

__all__ = ["export_onnx", "greedy_decoding_from_onnx", "DEFAULT_OPSET", "OPSETS"]

#: The default ONNX opset: recent enough for every op the graph uses, old enough for any
#: ONNX Runtime of the last years.
DEFAULT_OPSET = 17
#: The opsets :func:`export_onnx` writes (those tested).
OPSETS = range(14, 21)

_DECODE_OUTPUTS = ("argmax", "keep", "max_prob", "lengths")


class _Exported(nn.Module):
    """The graph written to ONNX: the CRNN, plus the greedy-decode head with ``decode``."""

    def __init__(self, net: CRNN, decode: bool, blank: int):
        super().__init__()
        self.net, self.decode, self.blank = net, decode, blank

    def forward(self, images: torch.Tensor, widths: Optional[torch.Tensor] = None):
        scores = self.net(images)  # (T, N, C)
        if not self.decode:
            return scores
        s = scores.transpose(0, 1)  # (N, T, C)
        # the argmax of the raw scores, not of their softmax: two close scores can round to
        # one probability, and ctc_greedy_decode takes the argmax of the scores
        argmax = s.argmax(dim=2)
        max_prob = torch.exp(s.amax(dim=2) - torch.logsumexp(s, dim=2))
        lengths = self.net.output_length(widths)
        # frame indices as a cumulative sum: it follows the dynamic T where a traced
        # torch.arange(T) could keep the example's T as a constant
        frame = torch.ones_like(argmax).cumsum(1) - 1
        prev = torch.cat([torch.full_like(argmax[:, :1], -1), argmax[:, :-1]], dim=1)
        keep = (argmax != self.blank) & (argmax != prev) & (frame < lengths.unsqueeze(1))
        return scores, argmax, keep, max_prob, lengths


def _export_copy(model: CRNN) -> CRNN:
    """A float32 CPU copy in eval mode whose fused LSTMs run their torch backend."""
    net = copy.deepcopy(model).to(device="cpu", dtype=torch.float32).eval()
    for m in net.modules():
        if isinstance(m, LSTM):
            m.backend = "torch"
    return net


def export_onnx(
    model: CRNN,
    path: Union[str, "os.PathLike[str]"],
    include_decode: bool = True,
    opset: int = DEFAULT_OPSET,
    *,
    blank: int = 0,
    metadata: Optional[Mapping[str, str]] = None,
) -> str:
    """Writes ``model`` as an ONNX model with dynamic batch size and image width.

    Args:
        model: a :class:`fastcrnn.nn.CRNN` (any backend, device and dtype; it is copied, the
            copy exported in float32 from the CPU in eval mode, the model itself unchanged).
        path: the .onnx file to write; its folder must exist.
        include_decode: add the greedy-decode outputs and the ``widths`` input (see the module
            doc for the inputs, outputs and how to read them).
        opset: the ONNX opset, in :data:`OPSETS` (default :data:`DEFAULT_OPSET`).
        blank: the blank class for the decode outputs, in [0, nclass).
        metadata: optional string pairs stored in the model's ``metadata_props`` (the CLI
            stores the alphabet and preprocessing there).

    The export uses torch's TorchScript-based exporter (``torch.onnx.export(...,
    dynamo=False)``). torch's newer torch.export-based exporter (``dynamo=True``) writes an
    equivalent graph (ONNX LSTM ops, the same outputs) but traces and decomposes the whole
    model first, many times slower, so it is not used.

    Returns the path written. Needs the ``onnx`` package (``pip install 'fastcrnn[export]'``).
    The model is checked with ``onnx.checker``.
    """
    try:
        import onnx
    except ImportError:
        raise ImportError(
            "export_onnx needs the onnx package: pip install 'fastcrnn[export]' "
            "(onnx, onnxruntime, onnxscript)"
        ) from None
    if not isinstance(model, CRNN):
        raise TypeError(f"model must be a fastcrnn.nn.CRNN, got {type(model).__name__}")
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"path: the folder {folder!r} does not exist")
    if not isinstance(include_decode, bool):
        raise TypeError(f"include_decode must be a bool, got {type(include_decode).__name__}")
    if isinstance(opset, bool) or not isinstance(opset, int):
        raise TypeError(f"opset must be an int, got {type(opset).__name__}")
    if opset not in OPSETS:
        raise ValueError(f"opset must be in [{OPSETS[0]}, {OPSETS[-1]}], got {opset}")
    if isinstance(blank, bool) or not isinstance(blank, int):
        raise TypeError(f"blank must be an int, got {type(blank).__name__}")
    if not 0 <= blank < model.nclass:
        raise ValueError(f"blank must be in [0, {model.nclass}), got {blank}")
    props = dict(metadata or {})
    for k, v in props.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise TypeError(f"metadata must map str to str, got {k!r}: {type(v).__name__}")

    net = _export_copy(model)
    graph = _Exported(net, include_decode, blank).eval()
    # an example wide enough for a few frames in both variants; batch and width are dynamic
    N, W = 2, 160
    images = torch.zeros(N, net.nc, net.imgH, W)
    scores_name = "logits" if net.output == "logits" else "log_probs"
    if include_decode:
        args: Any = (images, torch.tensor([W, W * 3 // 4], dtype=torch.int64))
        input_names = ["images", "widths"]
        output_names = [scores_name, *_DECODE_OUTPUTS]
    else:
        args = (images,)
        input_names = ["images"]
        output_names = [scores_name]
    _export_torchscript(graph, args, path, input_names, output_names, opset, include_decode)

    proto = onnx.load(path)
    for k, v in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.checker.check_model(proto)
    onnx.save(proto, path)
    return path


def _export_torchscript(graph, args, path, input_names, output_names, opset, decode):
    axes = {"images": {0: "batch", 3: "width"}, output_names[0]: {0: "frames", 1: "batch"}}
    if decode:
        axes["widths"] = {0: "batch"}
        axes.update({k: {0: "batch", 1: "frames"} for k in ("argmax", "keep", "max_prob")})
        axes["lengths"] = {0: "batch"}
    with warnings.catch_warnings():
        # the tracer flags the models' argument checks (Python bools of traced shapes): they
        # pass for the example and are not part of the graph
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning, module=r"fastcrnn\.")
        # this exporter is our choice (see export_onnx's doc), not the caller's
        warnings.filterwarnings("ignore", message=r".*legacy TorchScript-based ONNX export")
        warnings.filterwarnings("ignore", message=r"The feature will be removed")
        # about initial states sized for the example batch: the graph builds its zero states
        # from the input's batch size (the tests run several batch sizes)
        warnings.filterwarnings("ignore", message=r"Exporting a model to ONNX with a batch_size")
        torch.onnx.export(
            graph,
            args,
            path,
            dynamo=False,
            opset_version=opset,
            input_names=input_names,
            output_names=output_names,
            dynamic_axes=axes,
        )


def greedy_decoding_from_onnx(argmax, keep, max_prob, lengths, blank: int = 0) -> GreedyDecoding:
    """The :class:`fastcrnn.GreedyDecoding` that ``fastcrnn.ctc_greedy_decode`` gives, from
    the decode outputs of a model written by :func:`export_onnx`.

    Args:
        argmax: (N, T) integer array or tensor, the ``argmax`` output.
        keep: (N, T) bool, the ``keep`` output.
        max_prob: (N, T) float, the ``max_prob`` output.
        lengths: (N,) integer, the ``lengths`` output (frames per image).
        blank: the blank class the model was exported with.

    Returns CPU tensors: tokens (N, T) int64 padded with -1, lengths (N,) int64 (characters
    per image), token_probs (N, T) float32 (the largest ``max_prob`` over each character's
    run, 0 in padding), token_frames (N, T) int64 (each character's first frame, -1 in
    padding).
    """
    argmax = torch.as_tensor(argmax).to("cpu", torch.int64)
    keep = torch.as_tensor(keep).to("cpu")
    max_prob = torch.as_tensor(max_prob).to("cpu", torch.float32)
    frames = torch.as_tensor(lengths).to("cpu", torch.int64)
    if argmax.dim() != 2:
        raise ValueError(f"argmax must have shape (N, T), got {tuple(argmax.shape)}")
    N, T = argmax.shape
    if keep.dtype != torch.bool:
        raise TypeError(f"keep must be a bool array, got {keep.dtype}")
    for name, t in (("keep", keep), ("max_prob", max_prob)):
        if t.shape != argmax.shape:
            raise ValueError(f"{name} must have argmax's shape {(N, T)}, got {tuple(t.shape)}")
    if frames.shape != (N,):
        raise ValueError(f"lengths must have shape ({N},), got {tuple(frames.shape)}")
    frame = torch.arange(T).expand(N, T)
    # every valid non-blank frame belongs to the run of the last character started at or
    # before it: a run's first frame is a keep frame, the frames after it repeat its class
    run = keep.long().cumsum(1) - 1
    in_run = (argmax != blank) & (frame < frames.unsqueeze(1)) & (run >= 0)
    counts = keep.sum(1)
    tokens = torch.full((N, T), -1, dtype=torch.int64)
    token_frames = torch.full((N, T), -1, dtype=torch.int64)
    token_probs = torch.zeros(N, T, dtype=torch.float32)
    rows, cols = keep.nonzero(as_tuple=True)
    tokens[rows, run[rows, cols]] = argmax[rows, cols]
    token_frames[rows, run[rows, cols]] = cols
    rows, cols = in_run.nonzero(as_tuple=True)
    token_probs.view(-1).scatter_reduce_(
        0, rows * T + run[rows, cols], max_prob[rows, cols], reduce="amax"
    )
    return GreedyDecoding(tokens, counts, token_probs, token_frames)
