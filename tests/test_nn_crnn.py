"""CRNN (both variants) and BiLSTM: shapes, crnn.pytorch / tutorial compatibility, backends,
errors, and a training smoke test (a small CRNN overfits a batch to zero errors)."""

import pytest
import torch
import torch.nn.functional as F
from helpers import randomise_batchnorm
from torch import nn

import fastcrnn
from fastcrnn import reference
from fastcrnn.nn import CRNN, BidirectionalLSTM, BiLSTM
from fastcrnn.reference import ReferenceCRNN

FUSED = "fused"
SMALL = (8, 16, 16, 16, 24, 24, 24)


# ---- the tutorial's own network (section 2.2), verbatim apart from the prints ----------------


class _TutBiLSTM(nn.Module):
    def __init__(self, nIn, nHidden, nOut):
        super().__init__()
        self.lstm = nn.LSTM(input_size=nIn, hidden_size=nHidden, bidirectional=True)
        self.embdding = nn.Linear(nHidden * 2, nOut)

    def forward(self, input):
        recurrent, _ = self.lstm(input)
        S, b, h = recurrent.size()
        output = self.embdding(recurrent.view(S * b, h))
        return output.view(S, b, -1)


class _TutCRNN(nn.Module):
    def __init__(self, imgH, imgC, nclass, nhidden):
        assert imgH == 32
        super().__init__()
        cnn = nn.Sequential()
        cnn.add_module("conv0", nn.Conv2d(imgC, 64, 3, 1, 1))
        cnn.add_module("relu0", nn.ReLU(True))
        cnn.add_module("pooling0", nn.MaxPool2d(2, 2))
        cnn.add_module("conv1", nn.Conv2d(64, 128, 3, 1, 1))
        cnn.add_module("relu1", nn.ReLU(True))
        cnn.add_module("pooling1", nn.MaxPool2d(2, 2))
        cnn.add_module("conv2", nn.Conv2d(128, 256, 3, 1, 1))
        cnn.add_module("relu2", nn.ReLU(True))
        cnn.add_module("conv3", nn.Conv2d(256, 256, 3, 1, 1))
        cnn.add_module("relu3", nn.ReLU(True))
        cnn.add_module("pooling3", nn.MaxPool2d((1, 2), 2))
        cnn.add_module("conv4", nn.Conv2d(256, 512, 3, 1, 1))
        cnn.add_module("relu4", nn.ReLU(True))
        cnn.add_module("BN4", nn.BatchNorm2d(512))
        cnn.add_module("conv5", nn.Conv2d(512, 512, 3, 1, 1))
        cnn.add_module("relu5", nn.ReLU(True))
        cnn.add_module("BN5", nn.BatchNorm2d(512))
        cnn.add_module("pooling5", nn.MaxPool2d((1, 2), 2))
        cnn.add_module("conv6", nn.Conv2d(512, 512, 2, 1, 0))
        cnn.add_module("relu6", nn.ReLU(True))
        self.cnn = cnn
        self.rnn = nn.Sequential(
            _TutBiLSTM(512, nhidden, nhidden), _TutBiLSTM(nhidden, nhidden, nclass)
        )

    def forward(self, input):
        conv = self.cnn(input)
        b, c, h, w = conv.size()
        assert h == 1
        conv = conv.squeeze(2).permute(2, 0, 1)
        return F.log_softmax(self.rnn(conv), dim=2)


CRNN_PYTORCH_KEYS = (
    [f"cnn.conv{i}.{p}" for i in range(7) for p in ("weight", "bias")]
    + [
        f"cnn.batchnorm{i}.{p}"
        for i in (2, 4, 6)
        for p in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    ]
    + [
        f"rnn.{j}.rnn.{w}_l0{s}"
        for j in (0, 1)
        for s in ("", "_reverse")
        for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
    ]
    + [f"rnn.{j}.embedding.{p}" for j in (0, 1) for p in ("weight", "bias")]
)


# ---- crnn.pytorch variant -------------------------------------------------------------------


def test_crnn_pytorch_state_dict_keys_and_checkpoint_loads():
    torch.manual_seed(0)
    ours = CRNN(32, 1, 37, 256)
    assert sorted(ours.state_dict()) == sorted(CRNN_PYTORCH_KEYS)
    pub = ReferenceCRNN(32, 1, 37, 256)
    randomise_batchnorm(pub)
    pub.eval()
    ours.load_state_dict(pub.state_dict())  # strict: a published checkpoint loads unchanged
    ours.eval()
    x = torch.rand(2, 1, 32, 100)
    with torch.no_grad():
        out, ref = ours(x), F.log_softmax(pub(x), dim=2)
    assert out.shape == (26, 2, 37)
    torch.testing.assert_close(out, ref)
    pub.load_state_dict(ours.state_dict())  # and back


def test_crnn_pytorch_leaky_relu_matches_published():
    torch.manual_seed(1)
    ours = CRNN(32, 3, 11, 32, leaky_relu=True).eval()
    pub = ReferenceCRNN(32, 3, 11, 32, leaky_relu=True).eval()
    randomise_batchnorm(pub)
    ours.load_state_dict(pub.state_dict())
    x = torch.randn(2, 3, 32, 40)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), F.log_softmax(pub(x), dim=2))
    assert any(isinstance(m, nn.LeakyReLU) for m in ours.modules())


# ---- seed variant (the tutorial's network) --------------------------------------------------


def test_seed_tutorial_example_shape():
    torch.manual_seed(2)
    model = CRNN(32, 1, 3600, 256, variant="seed").eval()
    with torch.no_grad():
        out = model(torch.rand((32, 1, 32, 200)))
    assert out.shape == (11, 32, 3600)
    torch.testing.assert_close(out.exp().sum(-1), torch.ones(11, 32))


def test_seed_matches_tutorial_network():
    torch.manual_seed(3)
    tut = _TutCRNN(32, 1, 20, 32)
    randomise_batchnorm(tut)
    tut.eval()
    ours = CRNN(32, 1, 20, 32, variant="seed").eval()
    rename = {".lstm.": ".rnn.", ".embdding.": ".embedding."}
    sd = {}
    for k, v in tut.state_dict().items():
        for a, b in rename.items():
            k = k.replace(a, b)
        sd[k] = v
    ours.load_state_dict(sd)  # strict: every tensor has its place
    assert "cnn.BN4.running_mean" in sd and "cnn.BN5.weight" in sd
    x = torch.rand(3, 1, 32, 120)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), tut(x))


# ---- output length, output kinds, BiLSTM ----------------------------------------------------


@pytest.mark.parametrize(
    "variant,widths",
    [
        ("crnn.pytorch", [4, 5, 7, 8, 33, 100, 101]),
        ("seed", [32, 33, 35, 36, 64, 100, 200]),
    ],
)
def test_output_length_matches_forward(variant, widths):
    torch.manual_seed(4)
    model = CRNN(32, 1, 5, 8, variant=variant, channels=SMALL).eval()
    with torch.no_grad():
        for w in widths:
            T = model(torch.rand(1, 1, 32, w)).shape[0]
            assert model.output_length(w) == T >= 1
    t = model.output_length(torch.tensor(widths + [1, 2, 3]))
    assert t.dtype == torch.int64
    assert t.tolist() == [model.output_length(w) for w in widths + [1, 2, 3]]
    assert model.output_length(100) == (26 if variant == "crnn.pytorch" else 5)
    assert model.output_length(200) == (51 if variant == "crnn.pytorch" else 11)
    assert model.output_length(widths[0] - 1) == 0


def test_logits_output_and_log_probs_agree():
    torch.manual_seed(5)
    a = CRNN(32, 1, 9, 16, output="logits", channels=SMALL).eval()
    b = CRNN(32, 1, 9, 16, channels=SMALL).eval()
    b.load_state_dict(a.state_dict())
    x = torch.rand(2, 1, 32, 48)
    with torch.no_grad():
        logits, lp = a(x), b(x)
    torch.testing.assert_close(F.log_softmax(logits, 2), lp)
    assert not torch.allclose(logits, lp)


def test_bilstm_matches_reference():
    torch.manual_seed(6)
    m = BiLSTM(5, 4, 3).double()
    assert BidirectionalLSTM is BiLSTM
    x = torch.randn(7, 2, 5, dtype=torch.float64, requires_grad=True)
    out = m(x)
    rec, _ = reference.lstm(x, dict(m.rnn.named_parameters()), 1, bidirectional=True)
    ref = F.linear(rec, m.embedding.weight, m.embedding.bias)
    torch.testing.assert_close(out, ref)
    assert out.shape == (7, 2, 3)
    assert torch.autograd.gradcheck(m, (x,))
    # the tutorial's lstm_test shapes
    assert BiLSTM(512, 8, 56)(torch.rand(41, 3, 512)).shape == (41, 3, 56)


@pytest.mark.parametrize("backend", [FUSED])
def test_backends_agree(backend):
    torch.manual_seed(7)
    a = CRNN(32, 1, 11, 16, channels=SMALL, backend="torch").eval()
    b = CRNN(32, 1, 11, 16, channels=SMALL, backend=backend).eval()
    b.load_state_dict(a.state_dict())
    x = torch.rand(3, 1, 32, 64, requires_grad=True)
    oa, ob = a(x), b(x)
    torch.testing.assert_close(oa, ob, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(oa)
    ga = torch.autograd.grad((oa * g).sum(), [x] + list(a.parameters()))
    gb = torch.autograd.grad((ob * g).sum(), [x] + list(b.parameters()))
    for u, v in zip(ga, gb):
        torch.testing.assert_close(u, v, rtol=1e-4, atol=1e-5)


# ---- errors ---------------------------------------------------------------------------------


def test_crnn_rejects_bad_arguments():
    with pytest.raises(ValueError, match="imgH"):
        CRNN(64, 1, 5, 8)
    with pytest.raises(ValueError, match="imgH"):
        CRNN(40, 1, 5, 8)
    with pytest.raises(ValueError, match="imgH"):
        CRNN(48, 1, 5, 8, variant="seed")
    with pytest.raises(ValueError, match="variant"):
        CRNN(32, 1, 5, 8, variant="resnet")
    with pytest.raises(ValueError, match="output"):
        CRNN(32, 1, 5, 8, output="probs")
    with pytest.raises(ValueError, match="backend"):
        CRNN(32, 1, 5, 8, backend="onnx")
    with pytest.raises(ValueError, match="channels"):
        CRNN(32, 1, 5, 8, channels=(8, 8))
    with pytest.raises(ValueError, match="nclass"):
        CRNN(32, 1, 0, 8)
    with pytest.raises(TypeError, match="nh"):
        CRNN(32, 1, 5, 8.0)
    m = CRNN(32, 1, 5, 8, channels=SMALL)
    with pytest.raises(ValueError, match="height"):
        m(torch.rand(1, 1, 31, 100))
    with pytest.raises(ValueError, match="width"):
        m(torch.rand(1, 1, 32, 3))
    with pytest.raises(ValueError, match="channels"):
        m(torch.rand(1, 3, 32, 100))
    with pytest.raises(ValueError, match="input"):
        m(torch.rand(1, 32, 100))
    with pytest.raises(TypeError, match="input"):
        m(torch.ones(1, 1, 32, 100, dtype=torch.uint8))
    with pytest.raises(TypeError, match="width"):
        m.output_length(3.5)
    with pytest.raises(ValueError, match="n_in"):
        BiLSTM(0, 4, 3)
    with pytest.raises(ValueError, match="features"):
        BiLSTM(5, 4, 3)(torch.rand(2, 1, 4))


# ---- training smoke test --------------------------------------------------------------------


def _synthetic_batch(n, width, nclass, max_len, seed):
    """Images whose label sequence is drawn as bright vertical bars: class c -> bar height."""
    g = torch.Generator().manual_seed(seed)
    images = torch.zeros(n, 1, 32, width)
    labels, lengths = [], []
    for i in range(n):
        L = int(torch.randint(1, max_len + 1, (1,), generator=g))
        lab = torch.randint(1, nclass, (L,), generator=g)
        slot = width // max_len
        for j, c in enumerate(lab.tolist()):
            images[i, 0, 32 - 4 * c :, j * slot + 2 : j * slot + slot - 2] = 1.0
        labels.append(lab)
        lengths.append(L)
    images += 0.05 * torch.randn(images.shape, generator=g)
    return images, torch.cat(labels), torch.tensor(lengths), labels


def test_crnn_overfits_small_batch_to_zero_errors(one_thread):
    torch.manual_seed(8)
    nclass = 6
    model = CRNN(32, 1, nclass, 32, channels=(16, 32, 32, 32, 32, 32, 32))
    images, targets, target_lengths, labels = _synthetic_batch(8, 64, nclass, 4, seed=0)
    T = model.output_length(64)
    input_lengths = torch.full((8,), T, dtype=torch.long)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for step in range(500):  # converges in about 250 steps
        model.train()
        lp = model(images)
        loss = F.ctc_loss(lp, targets, input_lengths, target_lengths, blank=0)
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 25 == 24:
            model.eval()
            with torch.no_grad():
                dec = fastcrnn.ctc_greedy_decode(model(images))
            if all(
                dec.tokens[i, : dec.lengths[i]].tolist() == labels[i].tolist() for i in range(8)
            ):
                break
    model.eval()
    with torch.no_grad():
        dec = fastcrnn.ctc_greedy_decode(model(images))
    errors = sum(dec.tokens[i, : dec.lengths[i]].tolist() != labels[i].tolist() for i in range(8))
    assert errors == 0, (errors, step, first, loss.item())


def test_torch_backend_exports():
    """backend="torch" is the export path: torch.export and TorchScript tracing reproduce it."""
    import warnings

    torch.manual_seed(9)
    model = CRNN(32, 1, 7, 16, channels=SMALL, backend="torch").eval()
    x = torch.rand(2, 1, 32, 48)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exported = torch.export.export(model, (x,))
        traced = torch.jit.trace(model, (x,))
        ref = model(x)
        x2 = torch.rand(2, 1, 32, 48)
        torch.testing.assert_close(exported.module()(x2), model(x2))
        torch.testing.assert_close(traced(x2), model(x2))
    assert ref.shape == (model.output_length(48), 2, 7)


def test_on_device_matches_cpu(device):
    torch.manual_seed(10)
    model = CRNN(32, 1, 7, 16, channels=SMALL).eval()
    x = torch.rand(2, 1, 32, 40)
    with torch.no_grad():
        ref = model(x)
        out = model.to(device)(x.to(device))
    torch.testing.assert_close(out.cpu(), ref, rtol=1e-4, atol=1e-4)
    widths = torch.tensor([40, 3, 100], device=device)
    t = model.output_length(widths)
    assert t.device.type == device.type and t.tolist() == [model.output_length(40), 0, 26]
