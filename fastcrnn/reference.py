"""Plain-PyTorch reference implementations: the readable specification of every op.

Everything here is written for clarity, not speed. Tests compare the fused kernels against
these (or against torch's own op where one exists); benchmarks use them as baselines.
Nothing here modifies its inputs.
"""

import math
from typing import List, Optional

import torch
import torch.nn.functional as F

# ---------------------------------------------------------------------------------------------
# One-hot encoding (the classic char-level language-model helpers)
# ---------------------------------------------------------------------------------------------


def one_hot(x: torch.Tensor, n_class: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(...) int64 indices -> (..., n_class) one-hot vectors of `dtype`."""
    out = torch.zeros(*x.shape, n_class, dtype=dtype, device=x.device)
    out.scatter_(-1, x.long().unsqueeze(-1), 1)
    return out


def to_onehot(X: torch.Tensor, n_class: int) -> List[torch.Tensor]:
    """(N, T) indices -> a list of T tensors (N, n_class): one per time step."""
    return [one_hot(X[:, i], n_class) for i in range(X.shape[1])]


# ---------------------------------------------------------------------------------------------
# Recurrent networks, step by step, with nn.RNN / nn.LSTM's parameter layout
# ---------------------------------------------------------------------------------------------


def rnn_tanh_cell(x, h, weight_ih, weight_hh, bias_ih=None, bias_hh=None):
    """One vanilla RNN step: h' = tanh(x W_ihᵀ + b_ih + h W_hhᵀ + b_hh).

    x (N, I), h (N, H), weight_ih (H, I), weight_hh (H, H), biases (H,) -> h' (N, H).
    """
    return torch.tanh(F.linear(x, weight_ih, bias_ih) + F.linear(h, weight_hh, bias_hh))


def lstm_cell(x, state, weight_ih, weight_hh, bias_ih=None, bias_hh=None):
    """One LSTM step with nn.LSTMCell's layout (gates i, f, g, o stacked along dim 0).

    x (N, I), state = (h (N, H), c (N, H)), weight_ih (4H, I), weight_hh (4H, H), biases (4H,).
    Returns (h', c'), each (N, H).
    """
    h, c = state
    gates = F.linear(x, weight_ih, bias_ih) + F.linear(h, weight_hh, bias_hh)
    i, f, g, o = gates.chunk(4, dim=-1)
    c_next = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h_next = torch.sigmoid(o) * torch.tanh(c_next)
    return h_next, c_next


def recurrent_layer(cell, x, state, weights, lengths=None, reverse=False):
    """Runs `cell` over time for one layer and one direction.

    x (T, N, I); state: a tensor (N, H) or a tuple of them; weights: the cell's weight args;
    lengths (N,) int64 or None. A sequence's padded steps (t >= length) leave its state unchanged
    and output zeros; the reverse direction starts at each sequence's own last valid step.
    Returns (outputs (T, N, H), final state).
    """
    T = x.shape[0]
    steps = range(T - 1, -1, -1) if reverse else range(T)
    is_tuple = isinstance(state, tuple)
    outputs = [None] * T
    for t in steps:
        new = cell(x[t], state, *weights)
        if lengths is not None:
            valid = (t < lengths).to(x.dtype).unsqueeze(1)
            if is_tuple:
                new = tuple(valid * n + (1 - valid) * s for n, s in zip(new, state))
            else:
                new = valid * new + (1 - valid) * state
            out = (new[0] if is_tuple else new) * valid
        else:
            out = new[0] if is_tuple else new
        state = new
        outputs[t] = out
    return torch.stack(outputs) if T else x.new_zeros(
        0, x.shape[1], (state[0] if is_tuple else state).shape[-1]
    ), state


def _stacked(module_params, mode, x, hx, num_layers, bidirectional, lengths, dropout, training):
    dirs = 2 if bidirectional else 1
    cell = lstm_cell if mode == "lstm" else rnn_tanh_cell
    finals = []
    layer_input = x
    for layer in range(num_layers):
        outs = []
        for d in range(dirs):
            k = layer * dirs + d
            suffix = f"_l{layer}" + ("_reverse" if d == 1 else "")
            weights = [
                module_params[f"weight_ih{suffix}"],
                module_params[f"weight_hh{suffix}"],
                module_params.get(f"bias_ih{suffix}"),
                module_params.get(f"bias_hh{suffix}"),
            ]
            state = (hx[0][k], hx[1][k]) if mode == "lstm" else hx[k]
            out, final = recurrent_layer(cell, layer_input, state, weights, lengths, reverse=d == 1)
            outs.append(out)
            finals.append(final)
        layer_input = torch.cat(outs, dim=-1)
        if dropout > 0 and training and layer < num_layers - 1:
            layer_input = F.dropout(layer_input, dropout, True)
    if mode == "lstm":
        return layer_input, (
            torch.stack([f[0] for f in finals]),
            torch.stack([f[1] for f in finals]),
        )
    return layer_input, torch.stack(finals)


def lstm(x, params, num_layers=1, bidirectional=False, hx=None, lengths=None):
    """Multi-layer (bi)LSTM as nn.LSTM (time-major), step by step.

    x (T, N, I); params: a dict with nn.LSTM's names (weight_ih_l0, weight_hh_l0_reverse, ...);
    hx: optional (h0, c0), each (num_layers * dirs, N, H); lengths (N,) or None.
    Returns (output (T, N, dirs * H), (h_n, c_n)).
    """
    dirs = 2 if bidirectional else 1
    H = params["weight_hh_l0"].shape[1]
    if hx is None:
        z = x.new_zeros(num_layers * dirs, x.shape[1], H)
        hx = (z, z)
    return _stacked(params, "lstm", x, hx, num_layers, bidirectional, lengths, 0.0, False)


def rnn_tanh(x, params, num_layers=1, bidirectional=False, h0=None, lengths=None):
    """Multi-layer (bi)directional tanh RNN as nn.RNN (time-major), step by step.

    x (T, N, I); params with nn.RNN's names; h0 (num_layers * dirs, N, H) or None.
    Returns (output (T, N, dirs * H), h_n).
    """
    dirs = 2 if bidirectional else 1
    H = params["weight_hh_l0"].shape[1]
    if h0 is None:
        h0 = x.new_zeros(num_layers * dirs, x.shape[1], H)
    return _stacked(params, "rnn", x, h0, num_layers, bidirectional, lengths, 0.0, False)


# ---------------------------------------------------------------------------------------------
# Masking and attention
# ---------------------------------------------------------------------------------------------


def sequence_mask(X: torch.Tensor, valid_len: torch.Tensor, value: float = 0.0) -> torch.Tensor:
    """Returns a copy of X (N, T, ...) with entries at positions t >= valid_len[n] set to value."""
    T = X.shape[1]
    keep = torch.arange(T, device=X.device)[None, :] < valid_len.to(X.device)[:, None]
    keep = keep.reshape(keep.shape + (1,) * (X.dim() - 2))
    return torch.where(keep, X, torch.as_tensor(value, dtype=X.dtype, device=X.device))


def masked_softmax(X: torch.Tensor, valid_lens: Optional[torch.Tensor]) -> torch.Tensor:
    """Softmax over the last axis of X (B, Q, K) keeping only the first valid_lens keys.

    valid_lens: None, (B,) or (B, Q). X is not modified. A row whose valid length is 0 has no
    keys to attend to and returns all zeros (not a uniform distribution).
    """
    if valid_lens is None:
        return torch.softmax(X, dim=-1)
    B, Q, K = X.shape
    lens = valid_lens.to(X.device)
    lens = lens[:, None].expand(B, Q) if lens.dim() == 1 else lens
    keep = torch.arange(K, device=X.device)[None, None, :] < lens[..., None]
    scores = X.masked_fill(~keep, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    return torch.where(keep, weights, torch.zeros((), dtype=X.dtype, device=X.device))


def additive_attention(queries, keys, values, valid_lens, W_q, W_k, w_v):
    """Additive (MLP, Bahdanau) attention.

    queries (B, Q, Dq), keys (B, K, Dk), values (B, K, Dv), valid_lens None/(B,)/(B, Q);
    W_q (U, Dq), W_k (U, Dk), w_v (1, U). score(q, k) = w_v · tanh(W_q q + W_k k).
    Returns (output (B, Q, Dv), weights (B, Q, K)).
    """
    features = torch.tanh(
        F.linear(queries, W_q)[:, :, None, :] + F.linear(keys, W_k)[:, None, :, :]
    )
    scores = F.linear(features, w_v).squeeze(-1)
    weights = masked_softmax(scores, valid_lens)
    return torch.bmm(weights, values), weights


def dot_product_attention(queries, keys, values, valid_lens):
    """Scaled dot-product attention: (B, Q, D), (B, K, D), (B, K, Dv) -> (B, Q, Dv), weights."""
    scores = torch.bmm(queries, keys.transpose(1, 2)) / math.sqrt(queries.shape[-1])
    weights = masked_softmax(scores, valid_lens)
    return torch.bmm(weights, values), weights


# ---------------------------------------------------------------------------------------------
# CTC
# ---------------------------------------------------------------------------------------------


def _targets_per_sample(targets, target_lengths, N):
    lengths = [int(v) for v in target_lengths]
    if targets.dim() == 2:
        return [targets[n, : lengths[n]].tolist() for n in range(N)]
    out, start = [], 0
    for n in range(N):
        out.append(targets[start : start + lengths[n]].tolist())
        start += lengths[n]
    return out


def _logsumexp(terms):
    """log(sum(exp(terms))) whose gradient stays finite when every term is -inf."""
    stacked = torch.stack(terms)
    top = stacked.max().detach()
    if torch.isinf(top) and top < 0:
        return top
    return top + torch.log(torch.exp(stacked - top).sum())


def ctc_loss(
    log_probs,
    targets,
    input_lengths,
    target_lengths,
    blank=0,
    reduction="mean",
    zero_infinity=False,
):
    """Readable alpha-recursion CTC loss (for small cases), F.ctc_loss's semantics.

    log_probs (T, N, C); targets (N, S) padded or 1-D concatenated; lengths as sequences or
    tensors. Computed in log space over the extended label sequence (blank, l1, blank, ...,
    blank). Its autograd gradient is the true derivative with respect to log_probs (torch's
    ctc_loss instead returns exp(log_probs) - posterior; the two agree after a log_softmax).
    """
    T, N, C = log_probs.shape
    neg_inf = torch.tensor(float("-inf"), dtype=log_probs.dtype, device=log_probs.device)
    labels = _targets_per_sample(targets, target_lengths, N)
    losses = []
    for n in range(N):
        ext = [blank]
        for lab in labels[n]:
            ext += [lab, blank]
        S = len(ext)
        Tn = int(input_lengths[n])
        lp = log_probs[:, n, :]
        alpha = [neg_inf] * S
        if Tn > 0:
            alpha[0] = lp[0, blank]
            if S > 1:
                alpha[1] = lp[0, ext[1]]
        for t in range(1, Tn):
            prev = alpha
            alpha = []
            for s in range(S):
                terms = [prev[s]]
                if s >= 1:
                    terms.append(prev[s - 1])
                if s >= 2 and ext[s] != blank and ext[s] != ext[s - 2]:
                    terms.append(prev[s - 2])
                alpha.append(_logsumexp(terms) + lp[t, ext[s]])
        if Tn == 0:
            total = torch.zeros((), dtype=log_probs.dtype) if S == 1 else neg_inf
        else:
            ends = [alpha[S - 1]] + ([alpha[S - 2]] if S > 1 else [])
            total = _logsumexp(ends)
        loss = -total
        if zero_infinity and torch.isinf(loss):
            loss = torch.zeros((), dtype=log_probs.dtype, device=log_probs.device)  # no gradient
        losses.append(loss)
    losses = torch.stack(losses)
    if reduction == "none":
        return losses
    if reduction == "sum":
        return losses.sum()
    tl = torch.as_tensor([int(v) for v in target_lengths], dtype=losses.dtype)
    return (losses / tl.clamp(min=1)).mean()


def _normalised(log_probs: torch.Tensor, logits: bool) -> torch.Tensor:
    return log_probs.float().log_softmax(-1) if logits else log_probs


def ctc_greedy_decode_loop(log_probs, input_lengths=None, blank=0, logits=False):
    """Best-path decoding as a plain Python loop over sequences and frames.

    log_probs (T, N, C) (or log-softmax input when logits=True). Returns the tuple
    (tokens (N, T) int64 padded -1, lengths (N,), token_probs (N, T) float32 (0 in padding),
    token_frames (N, T) int64 padded -1); a token's probability is the highest over its run.
    """
    lp = _normalised(log_probs, logits)
    T, N, C = lp.shape
    lengths = [T] * N if input_lengths is None else [int(v) for v in input_lengths]
    best = lp.argmax(-1)
    best_lp = lp.gather(-1, best.unsqueeze(-1)).squeeze(-1)
    tokens = torch.full((N, T), -1, dtype=torch.int64)
    probs = torch.zeros(N, T, dtype=torch.float32)
    frames = torch.full((N, T), -1, dtype=torch.int64)
    counts = torch.zeros(N, dtype=torch.int64)
    for n in range(N):
        prev, k = -1, 0
        for t in range(lengths[n]):
            label = int(best[t, n])
            p = torch.exp(best_lp[t, n].double()).float()
            if label != prev:
                if label != blank:
                    tokens[n, k], probs[n, k], frames[n, k] = label, p, t
                    k += 1
            elif label != blank and (p > probs[n, k - 1] or torch.isnan(p)):
                probs[n, k - 1] = p
            prev = label
        counts[n] = k
    return tokens, counts, probs, frames


def ctc_greedy_decode_torch(log_probs, input_lengths=None, blank=0, logits=False):
    """Best-path decoding in vectorized torch ops (the speed baseline); same outputs as the loop."""
    lp = _normalised(log_probs, logits)
    T, N, C = lp.shape
    device = lp.device
    lengths = (
        torch.full((N,), T, dtype=torch.int64, device=device)
        if input_lengths is None
        else torch.as_tensor(input_lengths, dtype=torch.int64, device=device)
    )
    best = lp.argmax(-1).t()  # (N, T)
    prob = lp.gather(-1, best.t().unsqueeze(-1)).squeeze(-1).t().double().exp().float()
    t_idx = torch.arange(T, device=device)
    valid = t_idx[None, :] < lengths[:, None]
    label = torch.where(valid, best, torch.full_like(best, -2))  # padded frames end every run
    prev = torch.cat([torch.full_like(label[:, :1], -1), label[:, :-1]], dim=1)
    run_start = label != prev
    run_id = run_start.long().cumsum(1) - 1
    run_max = torch.full((N, T), float("-inf"), device=device).scatter_reduce(
        1, run_id, prob, reduce="amax"
    )
    emit = run_start & valid & (label != blank)
    slot = emit.long().cumsum(1) - 1
    rows = torch.arange(N, device=device)[:, None].expand(N, T)
    tokens = torch.full((N, T), -1, dtype=torch.int64, device=device)
    probs = torch.zeros(N, T, dtype=torch.float32, device=device)
    frames = torch.full((N, T), -1, dtype=torch.int64, device=device)
    tokens[rows[emit], slot[emit]] = label[emit]
    probs[rows[emit], slot[emit]] = run_max.gather(1, run_id)[emit]
    frames[rows[emit], slot[emit]] = t_idx[None, :].expand(N, T)[emit]
    return tokens, emit.sum(1), probs, frames
