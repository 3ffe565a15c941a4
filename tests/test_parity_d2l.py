"""Drop-in parity with d2l's (Dive into Deep Learning, PyTorch) seq2seq and attention pieces.

The first section transcribes d2l's definitions as its code defines them (written for these
tests, behaviour for behaviour: d2l's in-place sequence_mask with a float step index, the -1e6
fill of masked_softmax, the CrossEntropyLoss subclass that weights by a mask and averages over
the padded length, bleu's split(" ") and dict counting). fastcrnn's pieces are then checked
against them on random inputs over many shapes and valid lengths (0, T, above T, per query),
gradients included.

d2l's current PyTorch edition builds its Seq2Seq on GRUs, and its plain decoder concatenates the
encoder's final state to every input; fastcrnn follows the tutorial, which is d2l's earlier,
LSTM-based version (encoder and decoders on nn.LSTM; the attention query is h[-1] of the (h, c)
state). The Seq2Seq transcriptions here are of that LSTM version.

Documented differences, each asserted below: masked_softmax gives a row with valid length 0 all
zeros (d2l: uniform over padding); Seq2SeqEncoder skips padded source steps when given valid
lengths (d2l's encoder ignores them); bleu returns values where d2l raises ZeroDivisionError and
rejects a negative k.
"""

import collections
import math
import random

import pytest
import torch
from helpers import assert_close, grads
from torch import nn

import fastcrnn.functional as FF
from fastcrnn.nn import (
    AdditiveAttention,
    EncoderDecoder,
    MaskedSoftmaxCELoss,
    Seq2SeqAttentionDecoder,
    Seq2SeqDecoder,
    Seq2SeqEncoder,
    bleu,
)

# ---- d2l, transcribed -----------------------------------------------------------------------


def d2l_sequence_mask(X, valid_len, value=0):
    """Writes `value` into X (in place) at steps >= valid_len; returns X."""
    maxlen = X.size(1)
    steps = torch.arange(maxlen, dtype=torch.float32, device=X.device)
    mask = steps[None, :] < valid_len[:, None]
    X[~mask] = value
    return X


def d2l_masked_softmax(X, valid_lens):
    if valid_lens is None:
        return nn.functional.softmax(X, dim=-1)
    shape = X.shape
    if valid_lens.dim() == 1:
        valid_lens = torch.repeat_interleave(valid_lens, shape[1])
    else:
        valid_lens = valid_lens.reshape(-1)
    X = d2l_sequence_mask(X.reshape(-1, shape[-1]), valid_lens, value=-1e6)
    return nn.functional.softmax(X.reshape(shape), dim=-1)


class D2LAdditiveAttention(nn.Module):
    def __init__(self, key_size, query_size, num_hiddens, dropout):
        super().__init__()
        self.W_k = nn.Linear(key_size, num_hiddens, bias=False)
        self.W_q = nn.Linear(query_size, num_hiddens, bias=False)
        self.w_v = nn.Linear(num_hiddens, 1, bias=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, queries, keys, values, valid_lens):
        queries, keys = self.W_q(queries), self.W_k(keys)
        features = torch.tanh(queries.unsqueeze(2) + keys.unsqueeze(1))
        scores = self.w_v(features).squeeze(-1)
        self.attention_weights = d2l_masked_softmax(scores, valid_lens)
        return torch.bmm(self.dropout(self.attention_weights), values)


class D2LMaskedSoftmaxCELoss(nn.CrossEntropyLoss):
    def forward(self, pred, label, valid_len):
        weights = d2l_sequence_mask(torch.ones_like(label), valid_len)
        self.reduction = "none"
        unweighted = super().forward(pred.permute(0, 2, 1), label)
        return (unweighted * weights).mean(dim=1)


def d2l_bleu(pred_seq, label_seq, k):
    pred_tokens, label_tokens = pred_seq.split(" "), label_seq.split(" ")
    len_pred, len_label = len(pred_tokens), len(label_tokens)
    score = math.exp(min(0, 1 - len_label / len_pred))
    for n in range(1, k + 1):
        num_matches, label_subs = 0, collections.defaultdict(int)
        for i in range(len_label - n + 1):
            label_subs[" ".join(label_tokens[i : i + n])] += 1
        for i in range(len_pred - n + 1):
            gram = " ".join(pred_tokens[i : i + n])
            if label_subs[gram] > 0:
                num_matches += 1
                label_subs[gram] -= 1
        score *= math.pow(num_matches / (len_pred - n + 1), math.pow(0.5, n))
    return score


class D2LSeq2SeqEncoder(nn.Module):
    def __init__(self, vocab_size, embed_size, num_hiddens, num_layers, dropout=0):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_size)
        self.rnn = nn.LSTM(embed_size, num_hiddens, num_layers, dropout=dropout)

    def forward(self, X, *args):  # valid lengths, if passed, are ignored
        X = self.embedding(X).permute(1, 0, 2)
        return self.rnn(X)


class D2LSeq2SeqDecoder(nn.Module):
    def __init__(self, vocab_size, embed_size, num_hiddens, num_layers, dropout=0):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_size)
        self.rnn = nn.LSTM(embed_size, num_hiddens, num_layers, dropout=dropout)
        self.dense = nn.Linear(num_hiddens, vocab_size)

    def init_state(self, enc_outputs, *args):
        return enc_outputs[1]

    def forward(self, X, state):
        X = self.embedding(X).permute(1, 0, 2)
        out, state = self.rnn(X, state)
        return self.dense(out).permute(1, 0, 2), state


class D2LSeq2SeqAttentionDecoder(nn.Module):
    def __init__(self, vocab_size, embed_size, num_hiddens, num_layers, dropout=0):
        super().__init__()
        self.attention = D2LAdditiveAttention(num_hiddens, num_hiddens, num_hiddens, dropout)
        self.embedding = nn.Embedding(vocab_size, embed_size)
        self.rnn = nn.LSTM(embed_size + num_hiddens, num_hiddens, num_layers, dropout=dropout)
        self.dense = nn.Linear(num_hiddens, vocab_size)

    def init_state(self, enc_outputs, enc_valid_lens, *args):
        outputs, hidden_state = enc_outputs
        return (outputs.permute(1, 0, 2), hidden_state, enc_valid_lens)

    def forward(self, X, state):
        enc_outputs, hidden_state, enc_valid_lens = state
        X = self.embedding(X).permute(1, 0, 2)
        outputs, self._attention_weights = [], []
        for x in X:
            # the LSTM version: the query is the top layer's h of the (h, c) state
            query = torch.unsqueeze(hidden_state[0][-1], dim=1)
            context = self.attention(query, enc_outputs, enc_outputs, enc_valid_lens)
            x = torch.cat((context, torch.unsqueeze(x, dim=1)), dim=-1)
            out, hidden_state = self.rnn(x.permute(1, 0, 2), hidden_state)
            outputs.append(out)
            self._attention_weights.append(self.attention.attention_weights)
        outputs = self.dense(torch.cat(outputs, dim=0))
        return outputs.permute(1, 0, 2), [enc_outputs, hidden_state, enc_valid_lens]


def d2l_encoder_decoder(encoder, decoder, enc_X, dec_X, *args):
    enc_outputs = encoder(enc_X, *args)
    dec_state = decoder.init_state(enc_outputs, *args)
    return decoder(dec_X, dec_state)


# ---- masked_softmax -------------------------------------------------------------------------


def _lens(rng, shape, low, high, dtype=torch.int64):
    return torch.randint(low, high + 1, shape, generator=rng).to(dtype)


@pytest.mark.parametrize("B,Q,K", [(1, 1, 1), (2, 3, 4), (4, 1, 7), (3, 5, 2), (5, 2, 9)])
@pytest.mark.parametrize("per_query", [False, True])
def test_masked_softmax_matches_d2l(B, Q, K, per_query):
    rng = torch.Generator().manual_seed(B * 100 + Q * 10 + K + per_query)
    X = torch.randn(B, Q, K, dtype=torch.float64, generator=rng, requires_grad=True)
    # valid lengths from 1 to above K (K + 2 keeps every key in both)
    lens = _lens(rng, (B, Q) if per_query else (B,), 1, K + 2)
    lens.view(-1)[0] = K
    ours = FF.masked_softmax(X, lens)
    theirs = d2l_masked_softmax(X.clone(), lens)
    assert_close(ours, theirs, atol=1e-12, what="weights")
    g = torch.randn(ours.shape, dtype=ours.dtype, generator=rng)
    (g_ours,) = grads((ours * g).sum(), X)
    (g_theirs,) = grads((theirs * g).sum(), X)
    assert_close(g_ours, g_theirs, atol=1e-12, what="grad X")
    # float lengths (d2l passes them too) and None
    assert_close(FF.masked_softmax(X, lens.double()), theirs, atol=1e-12, what="float lens")
    assert_close(FF.masked_softmax(X, None), d2l_masked_softmax(X, None), atol=0, what="None")


def test_masked_softmax_zero_length_rows_are_zero_where_d2l_is_uniform():
    torch.manual_seed(0)
    X = torch.randn(3, 2, 5)
    lens = torch.tensor([[0, 2], [5, 0], [7, 1]])
    ours = FF.masked_softmax(X, lens)
    theirs = d2l_masked_softmax(X.clone(), lens)
    empty = lens == 0
    assert torch.all(ours[empty] == 0)
    assert_close(theirs[empty], torch.full_like(theirs[empty], 1 / 5), atol=1e-7, what="d2l")
    assert_close(ours[~empty], theirs[~empty], atol=1e-7, what="other rows")


# ---- AdditiveAttention ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "B,Q,K,dq,dk,dv,units", [(2, 1, 5, 3, 4, 6, 8), (3, 4, 2, 5, 5, 2, 3), (1, 3, 7, 2, 6, 4, 5)]
)
@pytest.mark.parametrize("lens_kind", ["none", "batch", "per_query", "above"])
def test_additive_attention_matches_d2l(B, Q, K, dq, dk, dv, units, lens_kind):
    torch.manual_seed(B + Q + K + dq + len(lens_kind))
    theirs = D2LAdditiveAttention(dk, dq, units, 0.1).double().eval()
    # the same positional arguments as d2l's; its state_dict (w_v) loads as it is
    ours = AdditiveAttention(dk, dq, units, 0.1).double().eval()
    ours.load_state_dict(theirs.state_dict())
    q = torch.randn(B, Q, dq, dtype=torch.float64, requires_grad=True)
    k = torch.randn(B, K, dk, dtype=torch.float64, requires_grad=True)
    v = torch.randn(B, K, dv, dtype=torch.float64, requires_grad=True)
    lens = {
        "none": None,
        "batch": torch.randint(1, K + 1, (B,)),
        "per_query": torch.randint(1, K + 1, (B, Q)),
        "above": torch.randint(K + 1, K + 4, (B,)),
    }[lens_kind]
    out, ref = ours(q, k, v, lens), theirs(q, k, v, lens)
    assert_close(out, ref, atol=1e-12, what="output")
    assert_close(ours.attention_weights, theirs.attention_weights, atol=1e-12, what="weights")
    g = torch.randn_like(out)
    ours_in = (q, k, v, ours.W_q.weight, ours.W_k.weight, ours.v.weight)
    theirs_in = (q, k, v, theirs.W_q.weight, theirs.W_k.weight, theirs.w_v.weight)
    for name, a, b in zip(
        ("query", "key", "value", "W_q", "W_k", "w_v"),
        grads((out * g).sum(), ours_in),
        grads((ref * g).sum(), theirs_in),
    ):
        assert_close(a, b, atol=1e-12, what=f"grad {name}")


# ---- MaskedSoftmaxCELoss --------------------------------------------------------------------


@pytest.mark.parametrize("N,T,V", [(1, 3, 2), (4, 5, 4), (6, 9, 11), (5, 2, 30)])
def test_masked_ce_loss_d2l_reduction_matches_d2l(N, T, V):
    rng = torch.Generator().manual_seed(N * 100 + T * 10 + V)
    pred = torch.randn(N, T, V, dtype=torch.float64, generator=rng, requires_grad=True)
    label = torch.randint(0, V, (N, T), generator=rng)
    # strictly inside (0, T), above T, 0 and T first, then random lengths
    lens = _lens(rng, (N,), 0, T + 3)
    lens[: min(N, 4)] = torch.tensor([T - 1, T + 2, 0, T][:N])
    ours = MaskedSoftmaxCELoss(reduction="per_sequence_padded_mean")(pred, label, lens)
    theirs = D2LMaskedSoftmaxCELoss()(pred, label, lens)
    assert_close(ours, theirs, atol=1e-12, what="loss")
    g = torch.randn(N, dtype=torch.float64, generator=rng)
    (g_ours,) = grads((ours * g).sum(), pred)
    (g_theirs,) = grads((theirs * g).sum(), pred)
    assert_close(g_ours, g_theirs, atol=1e-12, what="grad pred")
    # lengths as a list and as whole floats give the same
    for other in (lens.tolist(), lens.double()):
        again = MaskedSoftmaxCELoss("per_sequence_padded_mean")(pred, label, other)
        assert_close(again, theirs, atol=1e-12, what=type(other).__name__)
    # the default reduction: the same valid-token sum, divided by the number of valid tokens
    # instead of T per sequence (lengths above T count as T)
    n_valid = lens.clamp(max=T).sum().clamp(min=1)
    mean = MaskedSoftmaxCELoss()(pred, label, lens)
    assert_close(mean, theirs.sum() * T / n_valid, atol=1e-12, what="mean")
    assert_close(
        MaskedSoftmaxCELoss("sum")(pred, label, lens), theirs.sum() * T, atol=1e-12, what="sum"
    )


def test_masked_ce_loss_d2l_reduction_empty_time_axis_is_nan_like_d2l():
    pred, label = torch.randn(2, 0, 3), torch.zeros(2, 0, dtype=torch.long)
    lens = torch.tensor([0, 4])
    ours = MaskedSoftmaxCELoss("per_sequence_padded_mean")(pred, label, lens)
    theirs = D2LMaskedSoftmaxCELoss()(pred, label, lens)
    assert ours.shape == theirs.shape == (2,)
    assert torch.isnan(ours).all() and torch.isnan(theirs).all()


def test_masked_ce_loss_checks_valid_len_and_reduction():
    pred, label = torch.randn(2, 3, 4), torch.randint(0, 4, (2, 3))
    loss = MaskedSoftmaxCELoss("none")
    # +inf in a float tensor keeps every step, as d2l's float comparison does
    assert_close(
        loss(pred, label, torch.tensor([float("inf"), 1.0])),
        loss(pred, label, torch.tensor([3, 1])),
        atol=0,
        what="inf",
    )
    for bad, err in [
        (torch.tensor([-1, 2]), ValueError),
        ([1, -2], ValueError),
        (torch.tensor([1, 2, 3]), ValueError),
        (torch.tensor([[1, 2]]), ValueError),
        (torch.tensor([1.5, 2.0]), TypeError),
        (torch.tensor([float("nan"), 2.0]), TypeError),
        (torch.tensor([float("-inf"), 2.0]), ValueError),
        (torch.tensor([True, False]), TypeError),
        (torch.tensor([1 + 0j, 2 + 0j]), TypeError),
        ([1.0, 2.0], TypeError),
        ("12", TypeError),
        (None, ValueError),
    ]:
        with pytest.raises(err, match="valid_len"):
            loss(pred, label, bad)
    for bad in ("avg", "d2l", None, 0):
        with pytest.raises(ValueError, match="reduction"):
            MaskedSoftmaxCELoss(bad)


# ---- bleu -----------------------------------------------------------------------------------


def _random_text(rnd, max_tokens):
    words = [rnd.choice("abcd") for _ in range(rnd.randint(0, max_tokens))]
    text = ""
    for i, w in enumerate(words):
        # mostly one space; sometimes two (an empty token in d2l) or a tab (part of a token)
        text += w if i == 0 else rnd.choice([" ", " ", " ", "  ", "\t"]) + w
    if rnd.random() < 0.2:
        text = " " + text
    if rnd.random() < 0.2:
        text += " "
    return text


def test_bleu_matches_d2l_on_random_strings():
    rnd = random.Random(3)
    checked = 0
    for _ in range(400):
        pred, label = _random_text(rnd, 7), _random_text(rnd, 7)
        len_pred = len(pred.split(" "))
        for k in range(0, 6):
            if k <= len_pred:
                # exactly d2l's float: the same operations in the same order
                assert bleu(pred, label, k) == d2l_bleu(pred, label, k), (pred, label, k)
                checked += 1
            else:
                # d2l divides by len_pred - n + 1 == 0 at n = len_pred + 1; the orders above
                # len_pred are skipped here
                with pytest.raises(ZeroDivisionError):
                    d2l_bleu(pred, label, k)
                assert bleu(pred, label, k) == d2l_bleu(pred, label, len_pred)
        # a list of the same tokens scores the same
        assert bleu(pred.split(" "), label.split(" "), 1) == d2l_bleu(pred, label, 1)
    assert checked > 1000


def test_bleu_tokenizes_like_d2l():
    # two spaces: an empty token in the middle, so 3 tokens against 2
    assert bleu("a  b", "a b", 1) == d2l_bleu("a  b", "a b", 1) == math.sqrt(2 / 3)
    # a tab is not a separator: one token "a\tb" that matches nothing
    assert bleu("a\tb", "a b", 1) == d2l_bleu("a\tb", "a b", 1) == 0.0
    # "" is one empty token
    assert bleu("", "", 1) == d2l_bleu("", "", 1) == 1.0
    assert bleu("", "a", 1) == d2l_bleu("", "a", 1) == 0.0
    assert bleu(" a", "a", 1) == d2l_bleu(" a", "a", 1) == math.sqrt(1 / 2)
    # k = 0: the brevity penalty alone
    assert bleu("a b", "a b c d", 0) == d2l_bleu("a b", "a b c d", 0) == math.exp(-1)
    # whitespace splitting stays available by passing the tokens
    assert bleu("a\tb  c".split(), "a b c".split(), 3) == 1.0


def test_bleu_where_d2l_has_no_value():
    with pytest.raises(ZeroDivisionError):
        d2l_bleu("a", "a", 2)
    assert bleu("a", "a", 2) == 1.0
    # an empty token sequence (a string always has one token)
    assert bleu([], ["a"], 2) == 0.0 and bleu([], [], 2) == 1.0
    with pytest.raises(ValueError, match="k"):
        bleu("a", "a", -1)
    with pytest.raises(TypeError, match="k"):
        bleu("a", "a", 1.0)
    with pytest.raises(TypeError, match="label_seq"):
        bleu("a", [["a"]], 1)
    with pytest.raises(ValueError, match="pred_seq"):
        bleu(torch.zeros(2, 2, dtype=torch.long), "a", 1)


# ---- Seq2Seq encoder and decoders -----------------------------------------------------------


def _pair(ours_cls, theirs_cls, vocab, embed, hidden, layers, backend=None, seed=0):
    """d2l's module with random weights and ours with the same weights (its state_dict as is)."""
    torch.manual_seed(seed)
    theirs = theirs_cls(vocab, embed, hidden, layers).double()
    ours = ours_cls(vocab, embed, hidden, layers, backend=backend).double()
    ours.load_state_dict(theirs.state_dict())
    return ours, theirs


def _named_grads(module, loss):
    names, params = zip(*module.named_parameters())
    names = [n.replace("w_v.", "v.") for n in names]  # d2l's name for the scoring vector
    return dict(zip(names, grads(loss, params, retain=True)))


def _assert_same_grads(ours, theirs, loss_ours, loss_theirs, what):
    g_ours, g_theirs = _named_grads(ours, loss_ours), _named_grads(theirs, loss_theirs)
    assert g_ours.keys() == g_theirs.keys()
    for name in g_ours:
        assert_close(g_ours[name], g_theirs[name], atol=1e-10, what=f"{what} grad {name}")


# every shape on the default (fused) backend, one on the torch backend
@pytest.mark.parametrize(
    "backend,N,S,layers",
    [("fused", 1, 1, 1), ("fused", 3, 6, 2), ("fused", 4, 4, 3), ("torch", 3, 6, 2)],
)
def test_encoder_matches_d2l(backend, N, S, layers):
    ours, theirs = _pair(Seq2SeqEncoder, D2LSeq2SeqEncoder, 11, 5, 7, layers, backend, seed=S)
    X = torch.randint(0, 11, (N, S))
    out, (h, c) = ours(X)
    ref, (h_ref, c_ref) = theirs(X)
    assert out.shape == (S, N, 7) and h.shape == c.shape == (layers, N, 7)
    for what, a, b in (("outputs", out, ref), ("h", h, h_ref), ("c", c, c_ref)):
        assert_close(a, b, atol=1e-10, what=what)
    # full valid lengths (S, or above S) run every step, as d2l's encoder does
    out_full, _ = ours(X, torch.randint(S, S + 3, (N,)))
    assert_close(out_full, ref, atol=1e-10, what="outputs with lengths >= S")
    g = torch.randn_like(out)
    _assert_same_grads(ours, theirs, (out * g).sum() + h.sum(), (ref * g).sum() + h_ref.sum(), "")


@pytest.mark.parametrize("backend", ["fused", "torch"])
def test_plain_decoder_matches_d2l_lstm_version(backend):
    enc, enc_ref = _pair(Seq2SeqEncoder, D2LSeq2SeqEncoder, 9, 4, 6, 2, backend, seed=1)
    dec, dec_ref = _pair(Seq2SeqDecoder, D2LSeq2SeqDecoder, 8, 5, 6, 2, backend, seed=2)
    X, Y = torch.randint(0, 9, (3, 5)), torch.randint(0, 8, (3, 4))
    out, (h, c) = EncoderDecoder(enc, dec)(X, Y)
    ref, (h_ref, c_ref) = d2l_encoder_decoder(enc_ref, dec_ref, X, Y)
    assert out.shape == (3, 4, 8)
    for what, a, b in (("logits", out, ref), ("h", h, h_ref), ("c", c, c_ref)):
        assert_close(a, b, atol=1e-10, what=what)
    g = torch.randn_like(out)
    _assert_same_grads(dec, dec_ref, (out * g).sum(), (ref * g).sum(), "decoder")
    _assert_same_grads(enc, enc_ref, (out * g).sum(), (ref * g).sum(), "encoder")


@pytest.mark.parametrize(
    "backend,N,S,T,layers",
    [("fused", 1, 1, 1, 1), ("fused", 3, 5, 4, 2), ("fused", 4, 7, 3, 1), ("torch", 3, 5, 4, 2)],
)
def test_attention_decoder_matches_d2l(backend, N, S, T, layers):
    enc, enc_ref = _pair(Seq2SeqEncoder, D2LSeq2SeqEncoder, 10, 4, 6, layers, backend, seed=N)
    dec, dec_ref = _pair(
        Seq2SeqAttentionDecoder, D2LSeq2SeqAttentionDecoder, 9, 5, 6, layers, backend, seed=S
    )
    X, Y = torch.randint(0, 10, (N, S)), torch.randint(0, 9, (N, T))
    # lengths in [1, S + 2]: S and above S included; the encoder runs every step (as d2l's)
    lens = torch.randint(1, S + 3, (N,))
    lens[0] = S + 2
    lens[-1] = max(1, S - 1)
    enc_out = enc(X)
    enc_out_ref = enc_ref(X)
    out, (_, (h, c), _) = dec(Y, dec.init_state(enc_out, lens))
    ref, (_, (h_ref, c_ref), _) = dec_ref(Y, dec_ref.init_state(enc_out_ref, lens))
    assert out.shape == (N, T, 9) and dec.attention_weights.shape == (N, T, S)
    for what, a, b in (("logits", out, ref), ("h", h, h_ref), ("c", c, c_ref)):
        assert_close(a, b, atol=1e-10, what=what)
    # d2l keeps one (N, 1, S) tensor per step; fastcrnn one (N, T, S) tensor
    weights_ref = torch.cat(dec_ref._attention_weights, dim=1)
    assert_close(dec.attention_weights, weights_ref, atol=1e-10, what="attention weights")
    g = torch.randn_like(out)
    _assert_same_grads(dec, dec_ref, (out * g).sum(), (ref * g).sum(), "decoder")
    _assert_same_grads(enc, enc_ref, (out * g).sum(), (ref * g).sum(), "encoder")
    # without valid lengths every source step is attended to, in both
    out_all, _ = dec(Y, dec.init_state(enc_out, None))
    ref_all, _ = dec_ref(Y, dec_ref.init_state(enc_out_ref, None))
    assert_close(out_all, ref_all, atol=1e-10, what="logits, no lengths")


def test_encoder_decoder_with_lengths_above_source_matches_d2l():
    enc, enc_ref = _pair(Seq2SeqEncoder, D2LSeq2SeqEncoder, 10, 4, 6, 2, seed=4)
    dec, dec_ref = _pair(Seq2SeqAttentionDecoder, D2LSeq2SeqAttentionDecoder, 9, 5, 6, 2, seed=5)
    X, Y = torch.randint(0, 10, (3, 5)), torch.randint(0, 9, (3, 4))
    lens = torch.tensor([5, 8, 6])  # every sentence fills the source: no padded step
    out, _ = EncoderDecoder(enc, dec)(X, Y, lens)
    ref, _ = d2l_encoder_decoder(enc_ref, dec_ref, X, Y, lens)
    assert_close(out, ref, atol=1e-10, what="logits")


def test_documented_differences_of_the_attention_decoder():
    enc, enc_ref = _pair(Seq2SeqEncoder, D2LSeq2SeqEncoder, 10, 4, 6, 1, seed=6)
    dec, dec_ref = _pair(Seq2SeqAttentionDecoder, D2LSeq2SeqAttentionDecoder, 9, 5, 6, 1, seed=7)
    X, Y = torch.randint(0, 10, (3, 5)), torch.randint(0, 9, (3, 4))
    # a source of valid length 0: no key to attend to, a zero context (d2l: the mean of all)
    lens = torch.tensor([0, 5, 3])
    out, _ = dec(Y, dec.init_state(enc(X), lens))
    ref, _ = dec_ref(Y, dec_ref.init_state(enc_ref(X), lens))
    assert torch.all(dec.attention_weights[0] == 0)
    assert_close(out[1:], ref[1:], atol=1e-10, what="the other sentences")
    assert not torch.allclose(out[0], ref[0])
    # EncoderDecoder passes the lengths to the encoder, which skips padded source steps; d2l's
    # encoder ignores them and runs through the padding
    lens = torch.tensor([2, 5, 3])
    out, _ = EncoderDecoder(enc, dec)(X, Y, lens)
    ref, _ = d2l_encoder_decoder(enc_ref, dec_ref, X, Y, lens)
    assert_close(out[1], ref[1], atol=1e-10, what="the full-length sentence")
    assert not torch.allclose(out[0], ref[0])


def test_init_state_takes_lengths_above_source_and_checks_them():
    enc = Seq2SeqEncoder(10, 4, 6, 1)
    dec = Seq2SeqAttentionDecoder(9, 5, 6, 1)
    enc_out = enc(torch.randint(0, 10, (2, 5)))
    _, _, lens = dec.init_state(enc_out, torch.tensor([9, 5]))
    assert lens.tolist() == [5, 5] and lens.dtype == torch.int64
    _, _, lens = dec.init_state(enc_out, [7, 2])
    assert lens.tolist() == [5, 2]
    for bad, err in [
        (torch.tensor([-1, 2]), ValueError),
        (torch.tensor([1, 2, 3]), ValueError),
        (torch.tensor([1.5, 2.0]), TypeError),
        (torch.tensor([True, True]), TypeError),
        ([1, "2"], TypeError),
    ]:
        with pytest.raises(err, match="enc_valid_lens"):
            dec.init_state(enc_out, bad)
    with pytest.raises(ValueError, match="valid_lens"):
        enc(torch.randint(0, 10, (2, 5)), torch.tensor([3, -1]))
