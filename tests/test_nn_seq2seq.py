"""Seq2Seq: encoder, plain and attention decoders, masked loss, greedy/beam predict, BLEU, demo."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from fastcrnn import reference
from fastcrnn.demos import seq2seq as demo
from fastcrnn.nn import (
    EncoderDecoder,
    MaskedSoftmaxCELoss,
    Seq2SeqAttentionDecoder,
    Seq2SeqDecoder,
    Seq2SeqEncoder,
    bleu,
    predict,
)

FUSED = "fused"


def _lstm_params(rnn):
    return dict(rnn.named_parameters())


# ---- shapes (the tutorial's examples) -------------------------------------------------------


def test_encoder_decoder_tutorial_shapes():
    X = torch.zeros((4, 7), dtype=torch.long)
    encoder = Seq2SeqEncoder(vocab_size=10, embed_size=8, num_hiddens=16, num_layers=2)
    output, (h, c) = encoder(X)
    assert output.shape == (7, 4, 16)
    assert h.shape == (2, 4, 16) and c.shape == (2, 4, 16)
    decoder = Seq2SeqDecoder(vocab_size=10, embed_size=8, num_hiddens=16, num_layers=2)
    state = decoder.init_state(encoder(X))
    out, (h2, c2) = decoder(X, state)
    assert out.shape == (4, 7, 10) and h2.shape == (2, 4, 16) and c2.shape == (2, 4, 16)
    assert decoder.attention_weights is None


def test_attention_decoder_shapes_and_weights():
    torch.manual_seed(0)
    encoder = Seq2SeqEncoder(10, 8, 16, 2)
    decoder = Seq2SeqAttentionDecoder(10, 8, 16, 2)
    X = torch.randint(0, 10, (4, 7))
    valid = torch.tensor([7, 3, 5, 1])
    state = decoder.init_state(encoder(X, valid), valid)
    Y = torch.randint(0, 10, (4, 5))
    out, state = decoder(Y, state)
    assert out.shape == (4, 5, 10)
    w = decoder.attention_weights
    assert w.shape == (4, 5, 7)
    torch.testing.assert_close(w.sum(-1), torch.ones(4, 5))
    mask = torch.arange(7)[None, None, :] >= valid[:, None, None]
    assert torch.all(w.masked_select(mask) == 0)
    net = EncoderDecoder(encoder, decoder)
    logits, _ = net(X, Y, valid)
    torch.testing.assert_close(logits, out)


# ---- agreement with the references ----------------------------------------------------------


@pytest.mark.parametrize("with_lens", [False, True])
def test_encoder_matches_reference_lstm(with_lens):
    torch.manual_seed(1)
    enc = Seq2SeqEncoder(11, 5, 6, 2).double()
    X = torch.randint(0, 11, (4, 6))
    lens = torch.tensor([6, 2, 0, 4]) if with_lens else None
    out, (h, c) = enc(X, lens)
    emb = enc.embedding(X).transpose(0, 1)
    ref_out, (ref_h, ref_c) = reference.lstm(emb, _lstm_params(enc.rnn), 2, lengths=lens)
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(h, ref_h)
    torch.testing.assert_close(c, ref_c)
    if with_lens:
        assert torch.all(out[:, 2] == 0) and torch.all(h[:, 2] == 0)
        # the final state is the one at each sentence's own last step: the padded tail
        # (whatever its tokens) does not matter
        X2 = X.clone()
        X2[1, 2:] = (X2[1, 2:] + 1) % 11
        _, (h2, _) = enc(X2, lens)
        torch.testing.assert_close(h2, h)


def _attention_decoder_reference(dec, Y, enc_out, h, c, lens):
    """The attention decoder step by step from reference.additive_attention / lstm."""
    att = dec.attention
    params = _lstm_params(dec.rnn)
    emb = dec.embedding(Y).transpose(0, 1)
    keys = enc_out.transpose(0, 1)
    outs, weights = [], []
    for x in emb:
        ctx, w = reference.additive_attention(
            h[-1].unsqueeze(1), keys, keys, lens, att.W_q.weight, att.W_k.weight, att.v.weight
        )
        step = torch.cat([ctx.squeeze(1), x], -1).unsqueeze(0)
        o, (h, c) = reference.lstm(step, params, dec.num_layers, hx=(h, c))
        outs.append(o)
        weights.append(w)
    logits = F.linear(torch.cat(outs), dec.dense.weight, dec.dense.bias).transpose(0, 1)
    return logits, (h, c), torch.cat(weights, 1)


def test_attention_decoder_matches_reference_values_and_grads():
    torch.manual_seed(2)
    enc = Seq2SeqEncoder(9, 4, 5, 2).double()
    dec = Seq2SeqAttentionDecoder(7, 3, 5, 2).double()
    X = torch.randint(0, 9, (3, 6))
    lens = torch.tensor([6, 1, 4])
    Y = torch.randint(0, 7, (3, 4))
    enc_out, (h, c) = enc(X, lens)
    logits, (_, (h1, c1), _) = dec(Y, dec.init_state((enc_out, (h, c)), lens))
    ref_logits, (ref_h, ref_c), ref_w = _attention_decoder_reference(dec, Y, enc_out, h, c, lens)
    torch.testing.assert_close(logits, ref_logits)
    torch.testing.assert_close(h1, ref_h)
    torch.testing.assert_close(c1, ref_c)
    torch.testing.assert_close(dec.attention_weights, ref_w)
    g = torch.randn_like(logits)
    params = list(dec.parameters()) + list(enc.parameters())
    ga = torch.autograd.grad((logits * g).sum(), params, allow_unused=True, retain_graph=True)
    gb = torch.autograd.grad((ref_logits * g).sum(), params, allow_unused=True)
    for a, b in zip(ga, gb):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b)


def test_plain_decoder_matches_nn_lstm_and_gradcheck():
    torch.manual_seed(3)
    enc = Seq2SeqEncoder(6, 3, 4, 1).double()
    dec = Seq2SeqDecoder(5, 3, 4, 1).double()
    net = EncoderDecoder(enc, dec)
    X = torch.randint(0, 6, (2, 4))
    Y = torch.randint(0, 5, (2, 3))
    logits, _ = net(X, Y)
    state = enc(X)[1]
    out, _ = reference.lstm(dec.embedding(Y).transpose(0, 1), _lstm_params(dec.rnn), 1, hx=state)
    torch.testing.assert_close(logits, dec.dense(out).transpose(0, 1))
    w = dec.dense.weight
    assert torch.autograd.gradcheck(
        lambda weight: F.linear(
            dec.rnn(dec.embedding(Y).transpose(0, 1), state)[0], weight, dec.dense.bias
        ).sum(),
        (w.detach().requires_grad_(),),
    )


@pytest.mark.parametrize("backend", [FUSED])
def test_backends_agree(backend):
    torch.manual_seed(4)
    nets = {}
    for b in ("torch", backend):
        enc = Seq2SeqEncoder(9, 4, 5, 2, backend=b)
        dec = Seq2SeqAttentionDecoder(7, 3, 5, 2, backend=b)
        nets[b] = EncoderDecoder(enc, dec)
    nets[backend].load_state_dict(nets["torch"].state_dict())
    X, Y = torch.randint(0, 9, (3, 6)), torch.randint(0, 7, (3, 4))
    lens = torch.tensor([6, 2, 5])
    a, _ = nets["torch"](X, Y, lens)
    b, _ = nets[backend](X, Y, lens)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


# ---- masked loss ----------------------------------------------------------------------------


def test_masked_softmax_ce_loss_averages_over_valid_tokens():
    torch.manual_seed(5)
    N, T, V = 3, 6, 7
    pred = torch.randn(N, T, V, dtype=torch.float64, requires_grad=True)
    label = torch.randint(0, V, (N, T))
    label[1, 2:] = -100  # padding may hold anything
    valid = torch.tensor([4, 2, 6])
    keep = torch.arange(T)[None] < valid[:, None]
    expected = F.cross_entropy(pred[keep], label[keep])
    loss = MaskedSoftmaxCELoss()(pred, label, valid)
    torch.testing.assert_close(loss, expected)
    # "none": the mean over each sequence's own valid tokens
    per_seq = MaskedSoftmaxCELoss("none")(pred, label, valid)
    for n in range(N):
        torch.testing.assert_close(
            per_seq[n], F.cross_entropy(pred[n, : valid[n]], label[n, : valid[n]])
        )
    torch.testing.assert_close(
        MaskedSoftmaxCELoss("sum")(pred, label, valid), expected * valid.sum()
    )
    # no gradient into padded positions
    (grad,) = torch.autograd.grad(loss, pred)
    assert torch.all(grad[~keep] == 0) and torch.all(grad[keep].abs().sum(-1) > 0)
    # padding length does not dilute the mean: appending padding changes nothing
    pred2 = torch.cat([pred, torch.randn(N, 5, V, dtype=torch.float64)], 1)
    label2 = torch.cat([label, torch.zeros(N, 5, dtype=torch.long)], 1)
    torch.testing.assert_close(MaskedSoftmaxCELoss()(pred2, label2, valid), loss)


def test_masked_loss_empty_and_errors():
    pred = torch.randn(2, 3, 4, requires_grad=True)
    label = torch.zeros(2, 3, dtype=torch.long)
    loss = MaskedSoftmaxCELoss()(pred, label, torch.tensor([0, 0]))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.all(pred.grad == 0)
    assert torch.all(MaskedSoftmaxCELoss("none")(pred, label, torch.tensor([0, 2]))[0] == 0)
    with pytest.raises(ValueError, match="valid_len"):
        MaskedSoftmaxCELoss()(pred, label, torch.tensor([-1, 1]))
    with pytest.raises(ValueError, match="label"):
        MaskedSoftmaxCELoss()(pred, torch.zeros(2, 2, dtype=torch.long), torch.tensor([1, 1]))
    with pytest.raises(ValueError, match="label"):
        MaskedSoftmaxCELoss()(pred, torch.full((2, 3), 4), torch.tensor([1, 1]))
    with pytest.raises(ValueError, match="reduction"):
        MaskedSoftmaxCELoss("avg")
    with pytest.raises(ValueError, match="pred"):
        MaskedSoftmaxCELoss()(torch.randn(2, 3), label, torch.tensor([1, 1]))


# ---- predict: greedy and beam search --------------------------------------------------------


def _tiny_net(seed=6, attention=True, vocab=5):
    torch.manual_seed(seed)
    enc = Seq2SeqEncoder(8, 4, 6, 2)
    dec_cls = Seq2SeqAttentionDecoder if attention else Seq2SeqDecoder
    dec = dec_cls(vocab, 4, 6, 2)
    net = EncoderDecoder(enc, dec)
    with torch.no_grad():  # sharpen the distributions a little
        dec.dense.weight.mul_(4)
    return net


def _greedy_loop(net, src, bos, eos, num_steps):
    enc_X = torch.tensor([src])
    lens = torch.tensor([len(src)])
    state = net.decoder.init_state(net.encoder(enc_X, lens), lens)
    tok, out = bos, []
    for _ in range(num_steps):
        logits, state = net.decoder(torch.tensor([[tok]]), state)
        tok = int(logits[0, -1].argmax())
        if tok == eos:
            break
        out.append(tok)
    return out


@pytest.mark.parametrize("attention", [True, False])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_greedy_and_beam1_equal_argmax_loop(attention, seed):
    net = _tiny_net(seed, attention)
    net.eval()
    src = [3, 1, 4, 1, 5]
    with torch.no_grad():
        expected = _greedy_loop(net, src, 1, 2, 6)
    tokens, attn = predict(net, src, bos=1, eos=2, num_steps=6)
    assert tokens == expected
    steps = len(tokens) + (1 if len(tokens) < 6 else 0)
    if attention:
        assert attn.shape == (steps, len(src))
        torch.testing.assert_close(attn.sum(1), torch.ones(steps))
    else:
        assert attn.shape == (steps, 0)
    assert predict(net, torch.tensor(src), 1, 2, 6, beam_size=1)[0] == expected


def _sequence_logp(net, src, seq, bos):
    enc_X, lens = torch.tensor([src]), torch.tensor([len(src)])
    state = net.decoder.init_state(net.encoder(enc_X, lens), lens)
    logits, _ = net.decoder(torch.tensor([[bos] + seq[:-1]]), state)
    lp = F.log_softmax(logits[0].double(), -1)
    return float(lp[torch.arange(len(seq)), torch.tensor(seq)].sum())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_wide_beam_search_is_exhaustive(seed):
    """With a beam wider than every hypothesis set, beam search finds the sequence of best
    length-normalised score among all of them (checked by brute-force enumeration)."""
    net = _tiny_net(seed, vocab=4)
    net.eval()
    src, bos, eos, steps, alpha = [2, 7, 1], 1, 2, 3, 0.75
    tokens, _ = predict(net, src, bos, eos, steps, beam_size=16, length_penalty=alpha)
    best, best_seq = -math.inf, None
    with torch.no_grad():
        others = [t for t in range(4) if t != eos]
        for L in range(1, steps + 1):
            for body in itertools.product(others, repeat=L - 1):
                cands = [list(body) + [eos]]
                if L == steps:
                    cands += [list(body) + [t] for t in others]
                for seq in cands:
                    score = _sequence_logp(net, src, seq, bos) / len(seq) ** alpha
                    if score > best:
                        best, best_seq = score, seq
    expected = best_seq[:-1] if best_seq[-1] == eos else best_seq
    assert tokens == expected


def test_beam_search_not_worse_than_greedy_in_score():
    net = _tiny_net(7, vocab=6)
    net.eval()
    src = [4, 4, 6, 2]
    g, _ = predict(net, src, 1, 2, 5, beam_size=1, length_penalty=0.0)
    b, _ = predict(net, src, 1, 2, 5, beam_size=4, length_penalty=0.0)
    with torch.no_grad():

        def score(seq):
            full = seq + [2] if len(seq) < 5 else seq
            return _sequence_logp(net, src, full, 1)

        assert score(b) >= score(g) - 1e-9


def test_predict_rejects_bad_arguments():
    net = _tiny_net()
    with pytest.raises(ValueError, match="beam_size"):
        predict(net, [1, 2], 1, 2, 5, beam_size=0)
    with pytest.raises(ValueError, match="num_steps"):
        predict(net, [1, 2], 1, 2, 0)
    with pytest.raises(ValueError, match="eos"):
        predict(net, [1, 2], 1, 9, 3)
    with pytest.raises(ValueError, match="src_tokens"):
        predict(net, [], 1, 2, 3)
    with pytest.raises(ValueError, match="X"):
        predict(net, [1, 99], 1, 2, 3)
    with pytest.raises(TypeError, match="net"):
        predict(net.encoder, [1], 1, 2, 3)
    net.train()
    predict(net, [1, 2], 1, 2, 3)
    assert net.training  # restored after the call


def test_encoder_decoder_reject_bad_input():
    enc = Seq2SeqEncoder(5, 3, 4, 1)
    with pytest.raises(ValueError, match="X"):
        enc(torch.tensor([[0, 5]]))
    with pytest.raises(TypeError, match="X"):
        enc(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="X"):
        enc(torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="valid_lens"):
        enc(torch.zeros(2, 3, dtype=torch.long), torch.tensor([1, -4]))
    with pytest.raises(ValueError, match="valid_lens"):
        enc(torch.zeros(2, 3, dtype=torch.long), torch.tensor([1]))
    with pytest.raises(ValueError, match="backend"):
        Seq2SeqEncoder(5, 3, 4, 1, backend="gpu")
    with pytest.raises(ValueError, match="num_layers"):
        Seq2SeqDecoder(5, 3, 4, 0)
    dec = Seq2SeqDecoder(5, 3, 8, 1)
    with pytest.raises(ValueError, match="state"):
        dec(torch.zeros(2, 3, dtype=torch.long), enc(torch.zeros(2, 3, dtype=torch.long))[1])


# ---- BLEU -----------------------------------------------------------------------------------


def test_bleu_values():
    assert bleu("a b c d", "a b c d", 2) == 1.0
    assert bleu(["x"], ["x"], 2) == 1.0  # short: orders > len(pred) skipped
    assert bleu("", "a", 2) == 0.0 and bleu([], [], 3) == 1.0
    assert bleu("x y", "a b", 2) == 0.0
    # p1 = 4/4, p2 = 1/3 ("a b" only), no brevity penalty (4 vs 4)
    assert bleu("a b d c", "a b c d", 2) == pytest.approx((1 / 3) ** 0.25)
    # p1 = 3/4, p2 = 1/3
    assert bleu("a b c e", "a b d c", 2) == pytest.approx(0.75**0.5 * (1 / 3) ** 0.25)
    # brevity penalty: pred 2 tokens, label 4 -> exp(1 - 2) ; precisions 1
    assert bleu("a b", "a b c d", 2) == pytest.approx(math.exp(-1))
    # clipped counts: "a a a" vs "a b": p1 = 1/3
    assert bleu("a a a", "a b", 1) == pytest.approx((1 / 3) ** 0.5)
    assert bleu(torch.tensor([1, 2, 3]), [1, 2, 3], 4) == 1.0


def test_bleu_errors():
    with pytest.raises(ValueError, match="k"):
        bleu("a", "a", -1)
    with pytest.raises(TypeError, match="pred_seq"):
        bleu(3, "a", 1)


# ---- the demo task learns -------------------------------------------------------------------


def test_demo_task_data():
    assert demo.spell(342) == ["three", "hundred", "forty", "two"]
    assert demo.spell(0) == ["zero"] and demo.spell(15) == ["fifteen"]
    assert demo.spell(1005) == ["one", "thousand", "five"]
    train_pairs, test_pairs, sv, tv = demo.make_task(999)
    assert len(train_pairs) == 900 and len(test_pairs) == 100
    assert not {tuple(s) for s, _ in train_pairs} & {tuple(s) for s, _ in test_pairs}
    with pytest.raises(ValueError, match="n"):
        demo.spell(10000)


def test_seq2seq_demo_reaches_bleu(tmp_path, one_thread):
    """200 steps of the demo's training (small model, fixed seed) reach held-out BLEU-2 >= 0.9
    on numbers never seen in training (measured: about 0.95-1.0)."""
    png = tmp_path / "attn.png"
    result = demo.run(
        steps=200,
        embed_size=16,
        num_hiddens=32,
        num_layers=1,
        seed=0,
        beam_size=2,
        heatmap=str(png),
        renderer="pillow",
        verbose=False,
        eval_limit=50,
        examples=2,
    )
    assert result["losses"][-1] < result["losses"][0] / 10
    assert result["bleu_greedy"] >= 0.9, result["bleu_greedy"]
    assert result["bleu_beam"] >= 0.9, result["bleu_beam"]
    assert result["renderer"] == "pillow"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_main_runs(tmp_path, capsys, one_thread):
    png = tmp_path / "heat.png"
    assert (
        demo.main(
            [
                "--steps",
                "3",
                "--max-number",
                "40",
                "--hidden",
                "8",
                "--embed-size",
                "4",
                "--layers",
                "1",
                "--heatmap",
                str(png),
                "--examples",
                "2",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "BLEU" in out and "heatmap" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(SystemExit):
        demo.main(["--steps", "0"])


def test_on_device_matches_cpu(device):
    net = _tiny_net(11)
    net.eval()
    X, Y = torch.randint(0, 8, (3, 5)), torch.randint(0, 5, (3, 4))
    lens = torch.tensor([5, 1, 3])
    with torch.no_grad():
        ref, _ = net(X, Y, lens)
        ref_tokens = predict(net, [3, 1, 4], 1, 2, 6, beam_size=3)
    net = net.to(device)
    with torch.no_grad():
        out, _ = net(X.to(device), Y.to(device), lens.to(device))
    torch.testing.assert_close(out.cpu(), ref, rtol=1e-5, atol=1e-5)
    tokens, attn = predict(net, [3, 1, 4], 1, 2, 6, beam_size=3)
    assert tokens == ref_tokens[0]
    torch.testing.assert_close(attn, ref_tokens[1], rtol=1e-5, atol=1e-5)
    loss = MaskedSoftmaxCELoss()(out, Y.to(device), lens.to(device).clamp(max=4))
    assert loss.device.type == device.type and torch.isfinite(loss)
