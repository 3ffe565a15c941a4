"""crnn.pytorch's own checkpoints in ``eval``, ``predict`` and ``finetune``.

crnn.pytorch saves a bare model state dict (``torch.save(crnn.state_dict(), ...)``; with
DataParallel every key starts with ``module.``). It holds the network's shapes but not what
crnn.pytorch took from its command line: the alphabet, the case handling, the input size. The
flags of :func:`add_state_dict_args` give those (crnn.pytorch's defaults when absent: its
alphabet, ``ignore_case=True``, 32 x 100 inputs without keeping the aspect ratio, ReLU); the
rest comes from the tensors (conv widths, input channels, LSTM size, number of classes), and
every flag given is checked against them. For a fastcrnn checkpoint, which holds all of this
itself, a flag given must agree with it.
"""

import argparse
from typing import Any, Dict, Mapping, Optional

import torch

from fastcrnn.ocr.checkpoint import FORMAT, VERSION, CheckpointError, load_checkpoint
from fastcrnn.ocr.engine import DEFAULT_ALPHABET
from fastcrnn.ocr.model import model_config
from fastcrnn.text import Charset

__all__ = [
    "STATE_DICT_FLAGS",
    "add_state_dict_args",
    "state_dict_flags",
    "checkpoint_from_state_dict",
    "load_model_checkpoint",
]

# flag -> crnn.pytorch's value (its train.py / demo.py); None: read from the state dict
STATE_DICT_FLAGS: Dict[str, Any] = dict(
    alphabet=DEFAULT_ALPHABET,
    ignore_case=True,
    imgH=32,
    imgW=100,
    keep_ratio=False,
    nc=None,
    nh=None,
    leaky_relu=False,
)


def add_state_dict_args(p: argparse.ArgumentParser) -> None:
    """The flags describing a bare crnn.pytorch state dict (all default to None: not given)."""
    from fastcrnn.ocr.arguments import add_case_args, positive

    g = p.add_argument_group(
        "a crnn.pytorch state dict",
        "what a bare state dict (crnn.pytorch's checkpoints) cannot tell; crnn.pytorch's "
        "values when absent. A fastcrnn checkpoint holds them itself: a value given must "
        "agree with it.",
    )
    g.add_argument(
        "--alphabet",
        default=None,
        help="the characters, or a UTF-8 file with one per line (default crnn.pytorch's "
        f"{DEFAULT_ALPHABET!r}); one more class than characters, the blank",
    )
    add_case_args(g, default=None)
    g.add_argument("--imgH", type=positive(int), default=None, help="input height (32)")
    g.add_argument(
        "--imgW", type=positive(int), default=None, help="input width (100, as crnn.pytorch)"
    )
    g.add_argument(
        "--keep_ratio",
        action="store_const",
        const=True,
        default=None,
        help="resize to height imgH keeping the aspect ratio (crnn.pytorch's demo does not)",
    )
    g.add_argument(
        "--nc",
        type=positive(int),
        default=None,
        help="input channels, checked against the first convolution (1: grey images)",
    )
    g.add_argument(
        "--nh",
        type=positive(int),
        default=None,
        help="LSTM hidden size, checked against the state dict (crnn.pytorch: 256)",
    )
    g.add_argument(
        "--leaky_relu",
        action="store_const",
        const=True,
        default=None,
        help="the model was built with leakyRelu=True (the state dict does not show it)",
    )


def state_dict_flags(args) -> Dict[str, Any]:
    """The state-dict flags of parsed ``args`` (None for those absent or not given)."""
    return {name: getattr(args, name, None) for name in STATE_DICT_FLAGS}


def _check_names(flags: Mapping[str, Any]) -> None:
    unknown = sorted(set(flags) - set(STATE_DICT_FLAGS))
    if unknown:
        raise TypeError(f"unknown state-dict flag(s) {unknown}; known: {sorted(STATE_DICT_FLAGS)}")


def _shape(state_dict: Mapping[str, Any], key: str, path: str) -> torch.Size:
    value = state_dict.get(key)
    if not isinstance(value, torch.Tensor):
        raise CheckpointError(
            f"checkpoint {path!r} is not a CRNN state dict (crnn.pytorch's models/crnn.py "
            f"keys): it has no tensor {key!r}"
        )
    return value.shape


def checkpoint_from_state_dict(
    state_dict: Mapping[str, torch.Tensor], path: str, flags: Mapping[str, Any]
) -> Dict[str, Any]:
    """A fastcrnn checkpoint dict (``model``, ``charset``, ``case_insensitive``, ``config``)
    for a bare CRNN state dict (crnn.pytorch's layout, or the "seed" variant's) and the
    state-dict flags (None: crnn.pytorch's value).

    Raises ValueError naming the flag when a flag contradicts the tensors (``--alphabet`` whose
    size is not the classifier's, ``--nh``, ``--nc``) and CheckpointError when the state dict
    is not a CRNN's."""
    _check_names(flags)
    given = {k: v for k, v in flags.items() if v is not None}
    opts = dict(STATE_DICT_FLAGS, **given)
    if "cnn.batchnorm2.weight" in state_dict:
        variant = "crnn.pytorch"
    elif "cnn.BN4.weight" in state_dict:
        variant = "seed"
    else:
        raise CheckpointError(
            f"checkpoint {path!r} is not a CRNN state dict: it has neither crnn.pytorch's "
            f"'cnn.batchnorm2.weight' nor the seed variant's 'cnn.BN4.weight'"
        )
    conv0 = _shape(state_dict, "cnn.conv0.weight", path)
    channels = [int(_shape(state_dict, f"cnn.conv{i}.weight", path)[0]) for i in range(7)]
    nh = int(_shape(state_dict, "rnn.0.rnn.weight_hh_l0", path)[1])
    nclass = int(_shape(state_dict, "rnn.1.embedding.weight", path)[0])
    nc = int(conv0[1])
    if "nc" in given and given["nc"] != nc:
        raise ValueError(
            f"--nc {given['nc']}: the state dict's first convolution (cnn.conv0) takes {nc} "
            f"input channel(s)"
        )
    if nc != 1:
        raise ValueError(
            f"the state dict's first convolution takes {nc} input channels (--nc {nc}); "
            f"fastcrnn reads grey images (nc=1), as crnn.pytorch's train.py and demo.py do"
        )
    if "nh" in given and given["nh"] != nh:
        raise ValueError(
            f"--nh {given['nh']}: the state dict's LSTMs have hidden size {nh} "
            f"(rnn.0.rnn.weight_hh_l0)"
        )
    try:
        charset = Charset.load(opts["alphabet"], case_insensitive=opts["ignore_case"])
    except (ValueError, TypeError) as exc:
        raise ValueError(f"--alphabet: {exc}") from None
    if charset.num_classes != nclass:
        raise ValueError(
            f"--alphabet has {len(charset)} characters ({charset.num_classes} classes with "
            f"the blank) but the state dict's classifier (rnn.1.embedding) has {nclass} "
            f"classes: give the alphabet the model was trained with, {nclass - 1} characters "
            f"(crnn.pytorch's default is {DEFAULT_ALPHABET!r})"
        )
    try:
        cfg = model_config(
            imgH=opts["imgH"],
            nh=nh,
            variant=variant,
            channels=channels,
            leaky_relu=opts["leaky_relu"],
            imgW=opts["imgW"],
            keep_ratio=opts["keep_ratio"],
        )
        from fastcrnn.nn import CRNN

        CRNN(cfg["imgH"], 1, nclass, nh, variant=variant, channels=channels)  # checks imgH
    except ValueError as exc:
        raise ValueError(f"--imgH {opts['imgH']}: {exc}") from None
    return dict(
        format=FORMAT,
        version=VERSION,
        model=dict(state_dict),
        charset=charset.to_string(),
        case_insensitive=charset.case_insensitive,
        config=cfg,
        source="crnn.pytorch state dict",
    )


def _check_agrees(ck: Dict[str, Any], flags: Mapping[str, Any], path: str) -> None:
    """Raises ValueError naming the first flag given that contradicts fastcrnn checkpoint
    ``ck``."""
    cfg = ck["config"]
    held = dict(
        ignore_case=bool(ck.get("case_insensitive", False)),
        imgH=cfg.get("imgH"),
        imgW=cfg.get("imgW"),
        keep_ratio=cfg.get("keep_ratio"),
        nc=1,
        nh=cfg.get("nh"),
        leaky_relu=cfg.get("leaky_relu", False),
    )
    for name, value in flags.items():
        if value is None:
            continue
        if name == "alphabet":
            try:
                alphabet = Charset.load(value).to_string()
            except (ValueError, TypeError) as exc:
                raise ValueError(f"--alphabet: {exc}") from None
            if alphabet != ck["charset"]:
                raise ValueError(
                    f"--alphabet: {path!r} is a fastcrnn checkpoint for the alphabet "
                    f"{ck['charset']!r} ({len(ck['charset'])} characters), not {alphabet!r}; "
                    f"leave --alphabet out (finetune --add-chars adds characters)"
                )
        elif value != held[name]:
            flag = f"--{name}"
            if name == "ignore_case":
                flag = "--ignore_case" if value else "--case_sensitive"
            raise ValueError(
                f"{flag}: {path!r} is a fastcrnn checkpoint with {name}={held[name]!r}; "
                f"leave the flag out (it describes bare crnn.pytorch state dicts)"
            )


def load_model_checkpoint(
    path: str, flags: Optional[Mapping[str, Any]] = None, map_location="cpu"
) -> Dict[str, Any]:
    """A fastcrnn checkpoint (see :func:`fastcrnn.ocr.checkpoint.load_checkpoint`) from either
    kind of file: a fastcrnn checkpoint, checked against the flags given, or a bare
    (crnn.pytorch) state dict, completed by the flags (see
    :func:`checkpoint_from_state_dict`). ``flags`` maps :data:`STATE_DICT_FLAGS` names to
    values, None for not given."""
    flags = dict(flags or {})
    _check_names(flags)
    ck = load_checkpoint(path, map_location=map_location, allow_bare_state_dict=True)
    if ck.get("format") != FORMAT:
        return checkpoint_from_state_dict(ck["model"], path, flags)
    _check_agrees(ck, flags, path)
    return ck
