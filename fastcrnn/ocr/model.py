"""Building the recognition model from a checkpoint's plain config."""

from typing import Any, Dict, Optional

import torch
from torch import nn

__all__ = [
    "build_model",
    "unwrap",
    "TimeMajorDataParallel",
    "model_config",
    "DEMO_CHANNELS",
    "FULL_CHANNELS",
]

FULL_CHANNELS = (64, 128, 256, 256, 512, 512, 512)  # crnn.pytorch
DEMO_CHANNELS = (16, 32, 48, 48, 64, 64, 64)  # the demo's CPU-sized model


def model_config(
    imgH: int = 32,
    nh: int = 256,
    variant: str = "crnn.pytorch",
    channels=FULL_CHANNELS,
    leaky_relu: bool = False,
    imgW: int = 100,
    keep_ratio: bool = False,
    min_width: Optional[int] = None,
    max_width: Optional[int] = None,
) -> Dict[str, Any]:
    """The plain dict stored in checkpoints: model shape plus the input preprocessing."""
    return dict(
        imgH=int(imgH),
        nh=int(nh),
        variant=str(variant),
        channels=[int(c) for c in channels],
        leaky_relu=bool(leaky_relu),
        imgW=int(imgW),
        keep_ratio=bool(keep_ratio),
        min_width=None if min_width is None else int(min_width),
        max_width=None if max_width is None else int(max_width),
    )


def build_model(config: Dict[str, Any], nclass: int, backend: Optional[str] = None) -> nn.Module:
    """A :class:`fastcrnn.nn.CRNN` emitting logits (T, N, nclass) for grey (N, 1, imgH, W)."""
    from fastcrnn.nn import CRNN

    try:
        net = CRNN(
            config["imgH"],
            1,
            nclass,
            config["nh"],
            variant=config["variant"],
            leaky_relu=config.get("leaky_relu", False),
            output="logits",
            backend=backend,
            channels=tuple(config["channels"]),
        )
    except KeyError as exc:
        raise ValueError(f"model config lacks {exc.args[0]!r}") from None
    # oneDNN's convolutions and max-pooling run about 25% faster per CPU training step in NHWC
    # than in NCHW at the demo's sizes; load_state_dict and .to(device) keep the layout.
    return net.to(memory_format=torch.channels_last)


class TimeMajorDataParallel(nn.DataParallel):
    """``nn.DataParallel`` for a model taking batch-first images and returning time-major
    (T, N, C) scores: the images are split along N (dim 0) and the replicas' scores joined
    along N (dim 1). Plain DataParallel joins along its one ``dim`` (0), which would stack the
    replicas' frames into a (k T, N / k, C) tensor."""

    def gather(self, outputs, output_device):
        return torch.nn.parallel.gather(outputs, output_device, dim=1)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel / DataParallel."""
    while isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        model = model.module
    return model
