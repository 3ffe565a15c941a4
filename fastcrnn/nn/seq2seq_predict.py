"""Prediction with a trained :class:`fastcrnn.nn.EncoderDecoder`: greedy and beam search."""

from typing import List, Sequence, Tuple, Union, cast

import torch
import torch.nn.functional as F

from fastcrnn.nn.seq2seq import EncoderDecoder
from fastcrnn.ops._checks import positive_int

__all__ = ["predict", "predict_seq2seq"]


def _source(src_tokens, name="src_tokens") -> List[int]:
    if isinstance(src_tokens, torch.Tensor):
        if src_tokens.dim() != 1 or src_tokens.dtype.is_floating_point:
            raise ValueError(f"{name} must be a 1-D integer tensor or a list of ints")
        return [int(t) for t in src_tokens]
    if not isinstance(src_tokens, (list, tuple)):
        raise TypeError(
            f"{name} must be a list of ints or a 1-D tensor, got {type(src_tokens).__name__}"
        )
    return [positive_int(t, name, 0) for t in src_tokens]


@torch.no_grad()
def predict(
    net: EncoderDecoder,
    src_tokens: Union[torch.Tensor, Sequence[int]],
    bos: int,
    eos: int,
    num_steps: int,
    beam_size: int = 1,
    length_penalty: float = 0.75,
    device: Union[torch.device, str, None] = None,
) -> Tuple[List[int], torch.Tensor]:
    """Translates one source sentence by greedy (beam_size=1) or beam search.

    src_tokens: the source token ids (list or 1-D tensor), without padding. bos / eos: the
    decoder's begin and end token ids. num_steps: the most tokens to generate (eos included).
    Beam search keeps ``beam_size`` hypotheses; a finished one (ended by eos, or at num_steps)
    is scored by log P / L**length_penalty, L its length counting eos; the best score wins.
    beam_size=1 is exactly greedy decoding.

    Returns (tokens: list of ids without bos/eos, attention (steps, S) float tensor on the CPU:
    the decoder's attention weights at each decoding step of the chosen hypothesis, the eos
    step included; shape (steps, 0) for a decoder without attention).
    The network is put in eval mode for the call and restored afterwards.
    """
    if not isinstance(net, EncoderDecoder):
        raise TypeError(f"net must be an EncoderDecoder, got {type(net).__name__}")
    src = _source(src_tokens)
    if not src:
        raise ValueError("src_tokens must hold at least one token")
    vocab = cast(int, net.decoder.vocab_size)  # every Seq2Seq decoder has one
    bos, eos = positive_int(bos, "bos", 0), positive_int(eos, "eos", 0)
    for name, v in (("bos", bos), ("eos", eos)):
        if v >= vocab:
            raise ValueError(f"{name} must be a target token id in [0, {vocab}), got {v}")
    num_steps = positive_int(num_steps, "num_steps")
    beam_size = positive_int(beam_size, "beam_size")
    if isinstance(length_penalty, bool) or not isinstance(length_penalty, (int, float)):
        raise TypeError("length_penalty must be a float")
    if device is None:
        device = next(net.parameters()).device
    was_training = net.training
    net.eval()
    try:
        return _beam_search(
            net, src, bos, eos, num_steps, beam_size, float(length_penalty), torch.device(device)
        )
    finally:
        net.train(was_training)


predict_seq2seq = predict


def _beam_search(net, src, bos, eos, num_steps, k, alpha, device):
    enc_X = torch.tensor([src], dtype=torch.long, device=device)
    enc_len = torch.tensor([len(src)], dtype=torch.long, device=device)
    enc_outputs = net.encoder(enc_X, enc_len)
    state = net.decoder.init_state(enc_outputs, enc_len)
    S = len(src)
    # live hypotheses: tokens, score, attention rows; all start from bos
    live_tokens: List[List[int]] = [[]]
    live_scores = torch.zeros(1, dtype=torch.float64)
    live_attn: List[List[torch.Tensor]] = [[]]
    last = torch.tensor([[bos]], dtype=torch.long, device=device)
    finished = []  # (normalised score, tokens, attn)
    for step in range(num_steps):
        logits, state = net.decoder(last, state)
        logp = F.log_softmax(logits[:, -1].double(), dim=-1).cpu()  # (B, V)
        weights = net.decoder.attention_weights
        rows = (
            weights[:, -1].float().cpu() if weights is not None else torch.zeros(logp.shape[0], 0)
        )
        cand = (live_scores[:, None] + logp).reshape(-1)
        V = logp.shape[1]
        top = torch.topk(cand, min(2 * k, cand.numel()))
        new_tokens, new_scores, new_attn, parents = [], [], [], []
        for score, flat in zip(top.values.tolist(), top.indices.tolist()):
            b, tok = divmod(flat, V)
            attn = live_attn[b] + [rows[b]]
            if tok == eos:
                if len(finished) < k:
                    L = len(live_tokens[b]) + 1
                    finished.append((score / L**alpha, live_tokens[b], attn))
            else:
                new_tokens.append(live_tokens[b] + [tok])
                new_scores.append(score)
                new_attn.append(attn)
                parents.append(b)
                if len(new_tokens) == k:
                    break
        if len(finished) >= k or not new_tokens:
            break
        if step == num_steps - 1:
            for toks, score, attn in zip(new_tokens, new_scores, new_attn):
                finished.append((score / len(toks) ** alpha, toks, attn))
            break
        index = torch.tensor(parents, dtype=torch.long, device=device)
        state = net.decoder.reorder_state(state, index)
        live_tokens, live_attn = new_tokens, new_attn
        live_scores = torch.tensor(new_scores, dtype=torch.float64)
        last = torch.tensor([[t[-1]] for t in new_tokens], dtype=torch.long, device=device)
    best = max(finished, key=lambda f: f[0])
    attn = torch.stack(best[2]) if best[2] else torch.zeros(0, S)
    return best[1], attn
