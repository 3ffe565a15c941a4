"""A tiny CRNN whose greedy decode is varied, for the serving tests (test_recognizer.py,
test_export.py): no training needed.

A freshly initialised CRNN predicts the same class on every frame (the LSTM outputs hardly vary
against their common offset), so its decode is one character and exercises nothing. Here the
LSTMs lean more on their input than on their state (input weights x4, recurrent weights x0.2),
and the classifier is re-drawn on the centred, whitened LSTM features of a batch of line
images, with the blank slightly favoured: the argmax then follows the image, with blanks,
repeats and several characters, and different images read differently.
"""

import numpy as np
import torch

import fastcrnn

ALPHABET = "0123456789"
CHANNELS = (8, 8, 16, 16, 16, 16, 16)
NH = 16


def line_images(widths, seed=0, height=24):
    """Grey uint8 (height, w) "text lines": dark random strokes on a light background."""
    rng = np.random.default_rng(seed)
    out = []
    for w in widths:
        img = np.full((height, w), 220, dtype=np.uint8)
        for _ in range(max(w // 6, 1)):
            x, y = rng.integers(0, w), rng.integers(2, height - 2)
            img[max(y - 6, 0) : y + 6, x : x + 2] = rng.integers(0, 80)
        out.append(img)
    return out


def line_batch(widths, seed=0) -> torch.Tensor:
    """:func:`line_images` of height 32 as one (N, 1, 32, max(widths)) float32 batch, as the
    training collate makes it (``x / 127.5 - 1``, padded on the right with the background);
    without PIL, so that the tests needing no [ocr] extra can use it."""
    images = line_images(widths, seed, height=32)
    batch = torch.full((len(images), 1, 32, max(widths)), 220 / 127.5 - 1)
    for i, img in enumerate(images):
        batch[i, 0, :, : img.shape[1]] = torch.from_numpy(img.astype(np.float32) / 127.5 - 1)
    return batch


def lively_crnn(seed: int = 0, variant: str = "crnn.pytorch", output: str = "logits"):
    """An eval-mode fastcrnn.nn.CRNN(32, 1, 11, 16) (fused backend) with a varied decode."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = fastcrnn.nn.CRNN(
        32, 1, len(ALPHABET) + 1, NH, variant=variant, output=output, channels=CHANNELS
    ).eval()
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "weight_hh" in name:
                p.mul_(0.2)
            elif "weight_ih" in name:
                p.mul_(4.0)
    features = []
    emb = net.rnn[1].embedding
    hook = emb.register_forward_hook(lambda m, i, o: features.append(i[0].detach()))
    with torch.no_grad():
        net(line_batch([200, 150, 100, 300], seed=1000 + seed))
    hook.remove()
    f = features[0]
    with torch.no_grad():
        w = torch.randn(emb.weight.shape, generator=gen) / f.std(0).clamp_min(1e-6) * 3
        emb.weight.copy_(w)
        emb.bias.copy_(-(w @ f.mean(0)))
        emb.bias[0] += 2.0
    return net


def tiny_config(keep_ratio: bool = True, variant: str = "crnn.pytorch"):
    """The checkpoint config of :func:`lively_crnn`'s model."""
    from fastcrnn.ocr.model import model_config

    return model_config(
        imgH=32, nh=NH, variant=variant, channels=CHANNELS, imgW=100, keep_ratio=keep_ratio
    )


def save_tiny_checkpoint(path, net, keep_ratio: bool = True):
    """Writes ``net`` as a fastcrnn checkpoint (as train writes them) over :data:`ALPHABET`."""
    from fastcrnn.ocr.checkpoint import save_checkpoint

    save_checkpoint(
        str(path),
        dict(
            model=net.state_dict(),
            charset=ALPHABET,
            case_insensitive=False,
            config=tiny_config(keep_ratio, net.variant),
        ),
    )
    return path
