"""Seq2Seq with additive attention on a built-in synthetic translation task.

The task: spelled-out English numbers to their digits, e.g. "three hundred forty two" ->
"3 4 2" (numbers 0 .. max_number, generated, nothing downloaded). A held-out set of numbers is
never seen in training. The demo trains an encoder-decoder with attention, prints the held-out
BLEU (greedy and beam search) and example translations, and writes an attention heatmap PNG.

    python -m fastcrnn seq2seq-demo [--steps 300] [--heatmap seq2seq_attention.png] ...
    python -m fastcrnn.demos.seq2seq ...
"""

import argparse
import random
import time
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from fastcrnn.bleu import bleu
from fastcrnn.nn.seq2seq import (
    EncoderDecoder,
    MaskedSoftmaxCELoss,
    Seq2SeqAttentionDecoder,
    Seq2SeqDecoder,
    Seq2SeqEncoder,
)
from fastcrnn.nn.seq2seq_predict import predict

PAD, BOS, EOS = "<pad>", "<bos>", "<eos>"
_ONES = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
]
_TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]


def spell(n: int) -> List[str]:
    """English words for 0 <= n <= 9999 ("three hundred forty two")."""
    if not 0 <= n <= 9999:
        raise ValueError(f"n must be in [0, 9999], got {n}")
    if n < 20:
        return [_ONES[n]]
    if n < 100:
        return [_TENS[n // 10]] + ([_ONES[n % 10]] if n % 10 else [])
    if n < 1000:
        return [_ONES[n // 100], "hundred"] + (spell(n % 100) if n % 100 else [])
    return [_ONES[n // 1000], "thousand"] + (spell(n % 1000) if n % 1000 else [])


class Vocab:
    """Token <-> id. Ids 0, 1, 2 are <pad>, <bos>, <eos>."""

    def __init__(self, tokens: Sequence[str]):
        self.itos = [PAD, BOS, EOS] + sorted(set(tokens))
        self.stoi = {t: i for i, t in enumerate(self.itos)}

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, tokens: Sequence[str]) -> List[int]:
        return [self.stoi[t] for t in tokens]

    def decode(self, ids: Sequence[int]) -> List[str]:
        return [self.itos[i] for i in ids]


def make_task(max_number: int = 999, test_fraction: float = 0.1, seed: int = 0):
    """Returns (pairs_train, pairs_test, src_vocab, tgt_vocab); a pair is (words, digits)."""
    pairs = [(spell(n), list(str(n))) for n in range(max_number + 1)]
    rng = random.Random(seed)
    rng.shuffle(pairs)
    n_test = max(1, int(round(len(pairs) * test_fraction)))
    src_vocab = Vocab([w for s, _ in pairs for w in s])
    tgt_vocab = Vocab([d for _, t in pairs for d in t])
    return pairs[n_test:], pairs[:n_test], src_vocab, tgt_vocab


def _batch(pairs, src_vocab: Vocab, tgt_vocab: Vocab, src_len: int, tgt_len: int):
    """Tensors: src (N, src_len), src_valid (N,), tgt (N, tgt_len), tgt_valid (N,)."""
    src, src_valid, tgt, tgt_valid = [], [], [], []
    for words, digits in pairs:
        s = src_vocab.encode(words) + [src_vocab.stoi[EOS]]
        t = tgt_vocab.encode(digits) + [tgt_vocab.stoi[EOS]]
        src_valid.append(len(s))
        tgt_valid.append(len(t))
        src.append(s + [0] * (src_len - len(s)))
        tgt.append(t + [0] * (tgt_len - len(t)))
    return (torch.tensor(src), torch.tensor(src_valid), torch.tensor(tgt), torch.tensor(tgt_valid))


def build_model(
    src_vocab_size: int,
    tgt_vocab_size: int,
    embed_size: int = 32,
    num_hiddens: int = 64,
    num_layers: int = 2,
    dropout: float = 0.0,
    attention: bool = True,
    backend: Optional[str] = None,
) -> EncoderDecoder:
    encoder = Seq2SeqEncoder(
        src_vocab_size, embed_size, num_hiddens, num_layers, dropout, backend=backend
    )
    dec_cls = Seq2SeqAttentionDecoder if attention else Seq2SeqDecoder
    decoder = dec_cls(tgt_vocab_size, embed_size, num_hiddens, num_layers, dropout, backend=backend)
    return EncoderDecoder(encoder, decoder)


def evaluate_bleu(
    net: EncoderDecoder,
    pairs,
    src_vocab: Vocab,
    tgt_vocab: Vocab,
    k: int = 2,
    beam_size: int = 1,
    num_steps: int = 8,
) -> Tuple[float, float]:
    """(mean BLEU-k, exact-match accuracy) of the model's translations of ``pairs``."""
    scores, exact = [], 0
    for words, digits in pairs:
        src = src_vocab.encode(words) + [src_vocab.stoi[EOS]]
        out, _ = predict(
            net, src, tgt_vocab.stoi[BOS], tgt_vocab.stoi[EOS], num_steps, beam_size=beam_size
        )
        pred = tgt_vocab.decode(out)
        scores.append(bleu(pred, digits, k))
        exact += pred == digits
    return sum(scores) / len(scores), exact / len(pairs)


def train(
    net: EncoderDecoder,
    train_pairs,
    src_vocab: Vocab,
    tgt_vocab: Vocab,
    steps: int,
    batch_size: int = 64,
    lr: float = 0.01,
    log_every: int = 0,
    seed: int = 0,
    grad_clip: float = 1.0,
) -> List[float]:
    """Teacher-forced training with Adam on MaskedSoftmaxCELoss; returns the loss per step."""
    src_len = max(len(s) for s, _ in train_pairs) + 1
    tgt_len = max(len(t) for _, t in train_pairs) + 1
    rng = random.Random(seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    loss_fn = MaskedSoftmaxCELoss()
    bos = tgt_vocab.stoi[BOS]
    net.train()
    losses = []
    for step in range(1, steps + 1):
        batch = rng.sample(train_pairs, min(batch_size, len(train_pairs)))
        X, X_valid, Y, Y_valid = _batch(batch, src_vocab, tgt_vocab, src_len, tgt_len)
        dec_in = torch.cat([torch.full((Y.shape[0], 1), bos), Y[:, :-1]], dim=1)
        logits, _ = net(X, dec_in, X_valid)
        loss = loss_fn(logits, Y, Y_valid)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), grad_clip)
        opt.step()
        losses.append(loss.item())
        if log_every and (step % log_every == 0 or step == steps):
            print(f"step {step:5d}  loss {loss.item():.4f}", flush=True)
    return losses


def write_heatmap(
    weights: torch.Tensor,
    src_tokens: Sequence[str],
    tgt_tokens: Sequence[str],
    path: str,
    renderer: str = "auto",
) -> str:
    """Writes an attention heatmap (rows: output steps, columns: source tokens) as a PNG.

    renderer: "matplotlib", "pillow" or "auto" (matplotlib when installed, else Pillow).
    Returns the renderer used.
    """
    w = weights.detach().float().cpu()
    if w.dim() != 2:
        raise ValueError(f"weights must be 2-D (steps, source), got {tuple(w.shape)}")
    if renderer not in ("auto", "matplotlib", "pillow"):
        raise ValueError(f"renderer must be 'auto', 'matplotlib' or 'pillow', got {renderer!r}")
    if renderer in ("auto", "matplotlib"):
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            if renderer == "matplotlib":
                raise
        else:
            fig, ax = plt.subplots(figsize=(1 + 0.7 * w.shape[1], 1 + 0.5 * w.shape[0]))
            im = ax.imshow(w.numpy(), cmap="Reds", vmin=0.0, vmax=1.0)
            ax.set_xticks(range(w.shape[1]), list(src_tokens), rotation=45, ha="right")
            ax.set_yticks(range(w.shape[0]), list(tgt_tokens))
            ax.set_xlabel("source")
            ax.set_ylabel("output")
            fig.colorbar(im, ax=ax)
            fig.tight_layout()
            fig.savefig(path, dpi=100)
            plt.close(fig)
            return "matplotlib"
    from PIL import Image, ImageDraw

    cell, left, top = 40, 80, 80
    rows, cols = w.shape
    img = Image.new("RGB", (left + cell * cols + 10, top + cell * rows + 10), "white")
    draw = ImageDraw.Draw(img)
    for i in range(rows):
        draw.text((4, top + i * cell + cell // 3), str(tgt_tokens[i])[:10], fill="black")
        for j in range(cols):
            v = float(w[i, j].clamp(0, 1))
            shade = int(255 * (1 - v))
            draw.rectangle(
                [
                    left + j * cell,
                    top + i * cell,
                    left + (j + 1) * cell - 1,
                    top + (i + 1) * cell - 1,
                ],
                fill=(255, shade, shade),
            )
    for j in range(cols):
        draw.text((left + j * cell + 2, 4 + (j % 4) * 16), str(src_tokens[j])[:9], fill="black")
    img.save(path, format="PNG")
    return "pillow"


def run(
    steps: int = 300,
    batch_size: int = 64,
    embed_size: int = 32,
    num_hiddens: int = 64,
    num_layers: int = 2,
    lr: float = 0.01,
    max_number: int = 999,
    beam_size: int = 3,
    seed: int = 0,
    heatmap: Optional[str] = "seq2seq_attention.png",
    examples: int = 6,
    backend: Optional[str] = None,
    renderer: str = "auto",
    verbose: bool = True,
    eval_limit: Optional[int] = None,
) -> Dict:
    """Trains and evaluates; returns a dict with bleu_greedy, bleu_beam, exact_greedy,
    exact_beam, losses, examples, heatmap, renderer and the model."""
    torch.manual_seed(seed)
    train_pairs, test_pairs, src_vocab, tgt_vocab = make_task(max_number, seed=seed)
    if eval_limit is not None:
        test_pairs = test_pairs[:eval_limit]
    net = build_model(
        len(src_vocab), len(tgt_vocab), embed_size, num_hiddens, num_layers, backend=backend
    )
    log = print if verbose else (lambda *a, **k: None)
    log(
        f"task: spelled-out numbers 0..{max_number} -> digits; {len(train_pairs)} train, "
        f"{len(test_pairs)} held-out pairs; src vocab {len(src_vocab)}, tgt vocab "
        f"{len(tgt_vocab)}"
    )
    t0 = time.perf_counter()
    losses = train(
        net,
        train_pairs,
        src_vocab,
        tgt_vocab,
        steps,
        batch_size,
        lr,
        log_every=max(1, steps // 10) if verbose else 0,
        seed=seed,
    )
    log(f"trained {steps} steps in {time.perf_counter() - t0:.1f} s")
    num_steps = max(len(t) for _, t in train_pairs + test_pairs) + 2
    b_greedy, e_greedy = evaluate_bleu(net, test_pairs, src_vocab, tgt_vocab, 2, 1, num_steps)
    b_beam, e_beam = evaluate_bleu(net, test_pairs, src_vocab, tgt_vocab, 2, beam_size, num_steps)
    log(
        f"held-out BLEU-2: greedy {b_greedy:.3f} (exact {e_greedy:.1%}), beam {beam_size} "
        f"{b_beam:.3f} (exact {e_beam:.1%})"
    )
    shown = []
    for words, digits in test_pairs[:examples]:
        src = src_vocab.encode(words) + [src_vocab.stoi[EOS]]
        out, attn = predict(
            net, src, tgt_vocab.stoi[BOS], tgt_vocab.stoi[EOS], num_steps, beam_size=beam_size
        )
        pred = tgt_vocab.decode(out)
        shown.append((" ".join(words), " ".join(pred), bleu(pred, digits, 2)))
        log(f"  {' '.join(words):45s} => {' '.join(pred):10s} bleu {shown[-1][2]:.3f}")
    used = None
    if heatmap:
        words = max(test_pairs, key=lambda p: len(p[0]))[0]
        src = src_vocab.encode(words) + [src_vocab.stoi[EOS]]
        out, attn = predict(net, src, tgt_vocab.stoi[BOS], tgt_vocab.stoi[EOS], num_steps)
        rows = tgt_vocab.decode(out) + ([EOS] if attn.shape[0] > len(out) else [])
        used = write_heatmap(attn, words + [EOS], rows, heatmap, renderer)
        log(f"attention heatmap for '{' '.join(words)}' written to {heatmap} ({used})")
    return {
        "bleu_greedy": b_greedy,
        "bleu_beam": b_beam,
        "exact_greedy": e_greedy,
        "exact_beam": e_beam,
        "losses": losses,
        "examples": shown,
        "heatmap": heatmap,
        "renderer": used,
        "model": net,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m fastcrnn seq2seq-demo",
        description="Seq2Seq with attention: spelled-out numbers to "
        "digits (synthetic, no downloads).",
    )
    p.add_argument("--steps", type=int, default=300, help="training steps (default 300)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--embed-size", type=int, default=32)
    p.add_argument("--hidden", type=int, default=64, help="LSTM hidden size")
    p.add_argument("--layers", type=int, default=2, help="LSTM layers")
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--max-number", type=int, default=999, help="numbers 0..N (N <= 9999)")
    p.add_argument("--beam-size", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--examples", type=int, default=6, help="example translations to print")
    p.add_argument(
        "--heatmap",
        default="seq2seq_attention.png",
        help="PNG path for the attention heatmap ('' to skip)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: fastest for this small model)",
    )
    p.add_argument(
        "--backend",
        choices=("fused", "torch"),
        default=None,
        help="LSTM backend (default: the library default)",
    )
    args = p.parse_args(argv)
    for name in ("steps", "batch_size", "embed_size", "hidden", "layers", "beam_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.threads < 1:
        p.error("--threads must be >= 1")
    torch.set_num_threads(args.threads)
    if not 1 <= args.max_number <= 9999:
        p.error("--max-number must be in [1, 9999]")
    run(
        steps=args.steps,
        batch_size=args.batch_size,
        embed_size=args.embed_size,
        num_hiddens=args.hidden,
        num_layers=args.layers,
        lr=args.lr,
        max_number=args.max_number,
        beam_size=args.beam_size,
        seed=args.seed,
        heatmap=args.heatmap or None,
        examples=args.examples,
        backend=args.backend,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
