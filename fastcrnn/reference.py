"""Plain-PyTorch reference implementations: the readable specification of every op.

Everything here is written for clarity, not speed. Tests compare the fused kernels against
these (or against torch's own op where one exists); benchmarks use them as baselines.
Nothing here modifies its inputs.

One module on purpose, past 400 lines: it is the single place tests and benchmarks take their
references from, and each function stands alone.
"""

import math
from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import nn

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


def ctc_greedy_decode_minimal(log_probs: torch.Tensor, blank: int = 0) -> List[torch.Tensor]:
    """The few-line greedy decode users write (argmax, drop repeats and blanks, index each
    row): (T, N, C) -> N int64 tensors of tokens, no confidences or frames. A speed anchor."""
    best = log_probs.argmax(-1)  # (T, N)
    keep = best != blank
    keep[1:] &= best[1:] != best[:-1]
    return [best[:, n][keep[:, n]] for n in range(best.shape[1])]


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


# ---------------------------------------------------------------------------------------------
# CTC forced alignment (Viterbi)
# ---------------------------------------------------------------------------------------------


def ctc_forced_align(log_probs, targets, input_lengths, target_lengths, blank=0):
    """The most probable CTC path spelling each target, one sequence at a time in plain loops:
    the specification of fastcrnn.ctc_forced_align.

    log_probs (T, N, C); targets (N, S) padded or 1-D concatenated; lengths (N,) ints.
    Each frame's best predecessor is the first maximum among: the same state, the previous
    state, and (for a label state whose label differs from the one two states back) the state
    two back. The path ends in the final blank unless the final label scores higher.
    Returns (labels (N, T) int64 with -1 past the input length and for unalignable sequences,
    scores (N,) float64 with -inf for them), computed in float64.
    """
    T, N, _ = log_probs.shape
    lp = log_probs.detach().double().cpu()
    labels = torch.full((N, T), -1, dtype=torch.int64)
    scores = torch.full((N,), -math.inf, dtype=torch.float64)
    for n, target in enumerate(_targets_per_sample(targets, target_lengths, N)):
        Tn = int(input_lengths[n])
        states = [blank]
        for c in target:
            states += [c, blank]
        S = len(states)
        if Tn == 0:
            if not target:
                scores[n] = 0.0
            continue
        alpha = [[-math.inf] * S for _ in range(Tn)]
        back = [[0] * S for _ in range(Tn)]
        alpha[0][0] = float(lp[0, n, blank])
        if S > 1:
            alpha[0][1] = float(lp[0, n, states[1]])
        for t in range(1, Tn):
            for s in range(S):
                best, step = alpha[t - 1][s], 0
                if s >= 1 and alpha[t - 1][s - 1] > best:
                    best, step = alpha[t - 1][s - 1], 1
                if s >= 3 and s % 2 == 1 and states[s] != states[s - 2]:
                    if alpha[t - 1][s - 2] > best:
                        best, step = alpha[t - 1][s - 2], 2
                alpha[t][s] = best + float(lp[t, n, states[s]])
                back[t][s] = step
        s = S - 1
        if S >= 2 and alpha[Tn - 1][S - 2] > alpha[Tn - 1][S - 1]:
            s = S - 2
        if alpha[Tn - 1][s] == -math.inf:
            continue
        scores[n] = alpha[Tn - 1][s]
        for t in range(Tn - 1, -1, -1):
            labels[n, t] = states[s]
            s -= back[t][s]
    return labels, scores


def ctc_forced_align_torch(log_probs, targets, input_lengths, target_lengths, blank=0):
    """The same Viterbi alignment in vectorized torch ops over the batch and the states, one
    step per frame (the speed baseline). targets (N, S) padded. Same outputs as the loop
    version (scores in log_probs' accumulation dtype: float32, or float64 for float64)."""
    T, N, _ = log_probs.shape
    device = log_probs.device
    acc = torch.float64 if log_probs.dtype == torch.float64 else torch.float32
    lp = log_probs.detach().to(acc)
    il = torch.as_tensor(input_lengths, dtype=torch.int64, device=device)
    tl = torch.as_tensor(target_lengths, dtype=torch.int64, device=device)
    L = targets.shape[1]
    S = 2 * L + 1
    states = torch.full((N, S), blank, dtype=torch.int64, device=device)
    states[:, 1::2] = targets.to(device)
    skip = torch.zeros(N, S, dtype=torch.bool, device=device)
    skip[:, 3::2] = states[:, 3::2] != states[:, 1:-2:2]
    live = torch.arange(S, device=device)[None, :] < (2 * tl + 1)[:, None]
    emissions = lp.gather(2, states.unsqueeze(0).expand(T, N, S))  # (T, N, S)
    ninf = torch.tensor(-math.inf, dtype=acc, device=device)
    alpha = torch.full((N, S), -math.inf, dtype=acc, device=device)
    alpha[:, :2] = emissions[0, :, :2]
    alpha = torch.where(live, alpha, ninf)
    back = torch.zeros(T, N, S, dtype=torch.uint8, device=device)
    pad = torch.full((N, 2), -math.inf, dtype=acc, device=device)
    for t in range(1, T):
        shifted = torch.cat([pad, alpha], 1)
        one, two = shifted[:, 1:-1], torch.where(skip, shifted[:, :-2], ninf)
        step = (one > alpha).to(torch.uint8)
        best = torch.maximum(alpha, one)
        step = torch.where(two > best, 2, step).to(torch.uint8)
        best = torch.maximum(best, two)
        running = (t < il)[:, None]
        alpha = torch.where(running & live, best + emissions[t], alpha)
        back[t] = step
    rows = torch.arange(N, device=device)
    last_blank = alpha[rows, 2 * tl]
    last_label = alpha[rows, (2 * tl - 1).clamp(min=0)]
    use_label = (tl > 0) & (last_label > last_blank)
    s = torch.where(use_label, 2 * tl - 1, 2 * tl)
    scores = torch.where(use_label, last_label, last_blank)
    scores = torch.where(il == 0, torch.where(tl == 0, 0.0, -math.inf), scores).to(acc)
    aligned = scores > -math.inf
    labels = torch.full((N, T), -1, dtype=torch.int64, device=device)
    for t in range(T - 1, -1, -1):
        at = aligned & (t < il)
        labels[:, t] = torch.where(at, states[rows, s], -1)
        s = torch.where(at & (t > 0), s - back[t, rows, s].long(), s)
    return labels, scores


# ---------------------------------------------------------------------------------------------
# CTC prefix beam search
# ---------------------------------------------------------------------------------------------


def _log_add(a: float, b: float) -> float:
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    hi, lo = (a, b) if a >= b else (b, a)
    return hi + math.log1p(math.exp(lo - hi))


def _merge(beams: dict, prefix: tuple, p_b: float, p_nb: float) -> None:
    """Adds the probabilities of another path to `prefix` in `beams`."""
    old_b, old_nb = beams.get(prefix, (-math.inf, -math.inf))
    beams[prefix] = (_log_add(old_b, p_b), _log_add(old_nb, p_nb))


def _hotword_step(hotwords, starts, weight, state, c):
    """The hotword matcher after label c. state = (match, done, banked): the current partial
    match (a tuple that starts some hotword), how many of its labels are already banked, and the
    bonus banked for completed hotwords. A prefix's bonus while searching is
    banked + weight * (len(match) - done)."""
    match, done, banked = state
    if match + (c,) in starts:  # the match goes on
        match = match + (c,)
    elif done:  # it broke off after completing a hotword: that one stays banked; restart at c
        match, done = ((c,) if (c,) in starts else ()), 0
    else:  # it broke off: the longest suffix that still starts a hotword (maybe none)
        grown = match + (c,)
        match = next(grown[i:] for i in range(len(grown) + 1) if grown[i:] in starts)
    if match in hotwords:  # a hotword is complete: bank its labels not banked yet
        banked += weight * (len(match) - done)
        done = len(match)
        if not any(len(h) > len(match) and h[: len(match)] == match for h in hotwords):
            match, done = (), 0  # no longer hotword continues it: the next match starts afresh
    return match, done, banked


def ctc_prefix_beam_search(
    log_probs,
    input_length=None,
    beam_width=10,
    blank=0,
    nbest=1,
    max_tokens=None,
    token_min_logp=None,
    beam_prune_logp=None,
    lm=None,
    lm_tokens=None,
    lm_weight=0.5,
    word_bonus=0.0,
    lm_level="label",
    lm_word_tokens=None,
    lexicon=None,
    word_delimiter=None,
    hotwords=None,
    hotword_weight=1.5,
):
    """CTC prefix beam search for ONE sequence, in plain Python: the specification of
    fastcrnn.ctc_beam_search_decode.

    log_probs (T, C) log-probabilities. Each prefix keeps two log-probabilities: of the frames so
    far ending in a blank (p_b) and in its last label (p_nb). At each frame a prefix
    - stays by a blank: p_b' += p(blank) * (p_b + p_nb);
    - stays by repeating its last label (the run continues): p_nb' += p(last) * p_nb;
    - grows by a label c: p_nb'(prefix + c) += p(c) * (p_b + p_nb), or only p(c) * p_b when c
      repeats the last label (a repeat needs a blank between);
    identical prefixes reached by different paths merge (their probabilities add). Then the
    beam_width prefixes of highest score survive; ties go to the prefix that is smaller as a
    tuple of class indices; impossible ones (probability 0, or NaN) are dropped.

    Score: log(p_b + p_nb), plus with a language model ``lm`` (a fastcrnn.NGramLM; each label c
    is the LM token ``lm_tokens[c]``) lm_weight * ln(10) * log10 p_LM(prefix) + word_bonus *
    len(prefix), and at the end of the input the LM's end of sentence.

    Pruning: a frame's candidate labels are its max_tokens most probable non-blank classes (ties
    to the smaller class) with log-prob >= token_min_logp; labels outside them count as
    probability 0 at that frame, for growing and repeating alike. After ranking, prefixes below
    the best + beam_prune_logp are dropped.

    Lexicon (word class sequences, e.g. fastcrnn.Lexicon's ``classes``): a prefix grows by c
    only if its current word (its labels after the last ``word_delimiter``; all of them without
    one) followed by c starts a lexicon word, or if c is the delimiter and the current word is
    whole. At the end only prefixes whose current word is whole remain (maybe none).

    A word-level model (lm_level="word"; ``lm_word_tokens[i]`` is lexicon word i's LM token)
    scores each word when it completes: when the delimiter is appended after it, and at the
    end of the input (then also the end of sentence); word_bonus is added per word.

    Hotwords (class sequences): the score adds the bonus of ``_hotword_step``'s matcher run
    over the prefix, banked + hotword_weight * (partial match's labels not banked); the final
    score counts the banked bonus only (a partial match at the end gives its bonus back).
    Returns the nbest [(prefix tuple, score, CTC log-probability)], best first.
    """
    lp = log_probs.detach().double().cpu()
    T = lp.shape[0] if input_length is None else int(input_length)
    C = lp.shape[1]
    to_ln = lm_weight * math.log(10.0)
    lm_of = {(): (lm.begin_state(), 0.0)} if lm is not None else {}  # prefix -> (state, score)
    words = {tuple(w) for w in lexicon} if lexicon is not None else set()
    word_starts = {w[:i] for w in words for i in range(len(w) + 1)}
    hot = {tuple(h) for h in hotwords} if hotwords else set()
    hot_starts = {h[:i] for h in hot for i in range(len(h) + 1)}
    hot_of = {(): ((), 0, 0.0)}  # prefix -> the matcher's state

    def current_word(prefix):
        if word_delimiter is not None and word_delimiter in prefix:
            return prefix[len(prefix) - prefix[::-1].index(word_delimiter) :]
        return prefix

    def allowed(prefix, c):
        if lexicon is None:
            return True
        if c == word_delimiter:
            return current_word(prefix) in words
        return current_word(prefix) + (c,) in word_starts

    def hot_state(prefix):
        if prefix not in hot_of:
            hot_of[prefix] = _hotword_step(
                hot, hot_starts, hotword_weight, hot_state(prefix[:-1]), prefix[-1]
            )
        return hot_of[prefix]

    def hot_bonus(prefix):
        if not hot:
            return 0.0
        match, done, banked = hot_state(prefix)
        return banked + hotword_weight * (len(match) - done)

    by_word = lm is not None and lm_level == "word"
    word_token = dict(zip(map(tuple, lexicon), lm_word_tokens)) if by_word else {}

    def lm_score(prefix):
        if lm is None:
            return 0.0
        if prefix not in lm_of:
            lm_score(prefix[:-1])
            state, score = lm_of[prefix[:-1]]
            if not by_word:
                new_state, log10p = lm.advance(state, lm_tokens[prefix[-1]])
                lm_of[prefix] = (new_state, score + to_ln * log10p + word_bonus)
            elif prefix[-1] == word_delimiter:  # the word before it is complete
                new_state, log10p = lm.advance(state, word_token[current_word(prefix[:-1])])
                lm_of[prefix] = (new_state, score + to_ln * log10p + word_bonus)
            else:
                lm_of[prefix] = (state, score)
        return lm_of[prefix][1]

    def score(item):
        prefix, (p_b, p_nb) = item
        return _log_add(p_b, p_nb) + lm_score(prefix) + hot_bonus(prefix)

    beams = {(): (0.0, -math.inf)}  # prefix -> (log p_b, log p_nb)
    for t in range(T):
        row = [float(v) for v in lp[t]]
        labels = [
            c
            for c in range(C)
            if c != blank
            and row[c] > -math.inf
            and (token_min_logp is None or row[c] >= token_min_logp)
        ]
        if max_tokens is not None and len(labels) > max_tokens:
            labels = sorted(sorted(labels, key=lambda c: (-row[c], c))[:max_tokens])
        label_lp = {c: row[c] for c in labels}
        grown: dict = {}
        for prefix, (p_b, p_nb) in beams.items():
            total = _log_add(p_b, p_nb)
            _merge(grown, prefix, total + row[blank], -math.inf)
            if prefix:
                _merge(grown, prefix, -math.inf, p_nb + label_lp.get(prefix[-1], -math.inf))
            for c in labels:
                if not allowed(prefix, c):
                    continue
                source = p_b if prefix and prefix[-1] == c else total
                _merge(grown, prefix + (c,), -math.inf, source + row[c])
        live = [kv for kv in grown.items() if _log_add(*kv[1]) > -math.inf]
        ranked = sorted(live, key=lambda kv: (-score(kv), kv[0]))[:beam_width]
        if beam_prune_logp is not None and ranked:
            floor = score(ranked[0]) + beam_prune_logp
            ranked = [kv for kv in ranked if score(kv) >= floor]
        beams = dict(ranked)

    def final(item):
        prefix, (p_b, p_nb) = item
        end = 0.0
        if lm is not None:
            state = lm_of[prefix][0]
            if by_word:  # the last word completes with the input
                state, log10p = lm.advance(state, word_token[current_word(prefix)])
                end = to_ln * log10p + word_bonus
            end += to_ln * lm.advance(state, lm.eos_id)[1]
        banked = hot_state(prefix)[2] if hot else 0.0
        return _log_add(p_b, p_nb) + lm_score(prefix) + end + banked

    ends = [kv for kv in beams.items() if lexicon is None or current_word(kv[0]) in words]
    ranked = sorted(ends, key=lambda kv: (-final(kv), kv[0]))
    return [(kv[0], final(kv), _log_add(*kv[1])) for kv in ranked[:nbest]]


# ---------------------------------------------------------------------------------------------
# crnn.pytorch's network (meijieru/crnn.pytorch models/crnn.py), written from its published
# definition in plain PyTorch (nn.LSTM, eager): the CRNN that fastcrnn.nn.CRNN must equal, and
# the "plain PyTorch" baseline of the inference benchmark. Its module names, so its state_dict
# keys are crnn.pytorch's.
# ---------------------------------------------------------------------------------------------

FULL_WIDTHS = (64, 128, 256, 256, 512, 512, 512)


class ReferenceBidirectionalLSTM(nn.Module):
    """crnn.pytorch's BidirectionalLSTM: nn.LSTM (bidirectional) then a Linear per frame."""

    def __init__(self, n_in, n_hidden, n_out):
        super().__init__()
        self.rnn = nn.LSTM(n_in, n_hidden, bidirectional=True)
        self.embedding = nn.Linear(n_hidden * 2, n_out)

    def forward(self, x):
        recurrent, _ = self.rnn(x)
        steps, batch, hidden = recurrent.shape
        return self.embedding(recurrent.reshape(steps * batch, hidden)).reshape(steps, batch, -1)


class ReferenceCRNN(nn.Module):
    """crnn.pytorch's CRNN(imgH, nc, nclass, nh, leakyRelu): seven convolutions (3x3 pad 1, the
    last 2x2 pad 0), BatchNorm after conv2/4/6, pools 2x2, 2x2, (2,2)/(2,1)/(0,1) twice, then
    two BidirectionalLSTMs; raw scores out. ``widths`` narrows the convolutions for speed (the
    structure and the key names stay crnn.pytorch's)."""

    def __init__(self, imgH, nc, nclass, nh, leaky_relu=False, widths=FULL_WIDTHS):
        super().__init__()
        assert imgH % 16 == 0
        kernels, pads = [3, 3, 3, 3, 3, 3, 2], [1, 1, 1, 1, 1, 1, 0]
        cnn = nn.Sequential()

        def conv_relu(i, batch_norm=False):
            n_in = nc if i == 0 else widths[i - 1]
            cnn.add_module(f"conv{i}", nn.Conv2d(n_in, widths[i], kernels[i], 1, pads[i]))
            if batch_norm:
                cnn.add_module(f"batchnorm{i}", nn.BatchNorm2d(widths[i]))
            act = nn.LeakyReLU(0.2, inplace=True) if leaky_relu else nn.ReLU(True)
            cnn.add_module(f"relu{i}", act)

        conv_relu(0)
        cnn.add_module("pooling0", nn.MaxPool2d(2, 2))
        conv_relu(1)
        cnn.add_module("pooling1", nn.MaxPool2d(2, 2))
        conv_relu(2, True)
        conv_relu(3)
        cnn.add_module("pooling2", nn.MaxPool2d((2, 2), (2, 1), (0, 1)))
        conv_relu(4, True)
        conv_relu(5)
        cnn.add_module("pooling3", nn.MaxPool2d((2, 2), (2, 1), (0, 1)))
        conv_relu(6, True)
        self.cnn = cnn
        self.rnn = nn.Sequential(
            ReferenceBidirectionalLSTM(widths[6], nh, nh),
            ReferenceBidirectionalLSTM(nh, nh, nclass),
        )

    def forward(self, x):
        conv = self.cnn(x)
        assert conv.shape[2] == 1
        return self.rnn(conv.squeeze(2).permute(2, 0, 1))
