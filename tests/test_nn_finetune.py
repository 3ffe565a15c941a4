"""Fine-tuning with new characters: expand_classifier / merge_classifier / load_with_new_classes.

The guarantees: after many optimizer steps (Adam, AdamW with weight decay, SGD with momentum and
weight decay) in train mode, the old classifier rows, every frozen parameter and every
BatchNorm buffer are bitwise unchanged, so the logits of the old classes are bitwise unchanged
and the log-probabilities shift only by the new normaliser."""

import copy
import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fastcrnn.nn import (
    CRNN,
    ExpandedLinear,
    expand_classifier,
    load_with_new_classes,
    merge_classifier,
)

SMALL = (8, 16, 16, 16, 24, 24, 24)
C, K = 7, 3


def _trained_like_crnn(variant="crnn.pytorch", output="logits"):
    torch.manual_seed(0)
    model = CRNN(32, 1, C, 16, variant=variant, output=output, channels=SMALL)
    # non-trivial BatchNorm statistics: a few forward passes in train mode
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(4, 1, 32, 48))
    return model


def _snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


OPTIMIZERS = {
    "adam": lambda p: torch.optim.Adam(p, lr=1e-2),
    "adamw": lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.1),
    "sgd": lambda p: torch.optim.SGD(p, lr=1e-2, momentum=0.9, weight_decay=0.1),
    "sgd-nesterov": lambda p: torch.optim.SGD(
        p, lr=1e-2, momentum=0.9, nesterov=True, weight_decay=0.01
    ),
}


@pytest.mark.parametrize("variant", ["crnn.pytorch", "seed"])
@pytest.mark.parametrize("opt_name", list(OPTIMIZERS))
def test_only_new_rows_train(variant, opt_name, one_thread):
    model = _trained_like_crnn(variant)
    width = 48 if variant == "crnn.pytorch" else 64
    x = torch.rand(3, 1, 32, width)
    model.eval()
    with torch.no_grad():
        old_logits = model(x)
    before = _snapshot(model)

    assert expand_classifier(model, K) is model
    assert model.nclass == C + K
    head = model.rnn[1].embedding
    assert isinstance(head, ExpandedLinear) and head.out_features == C + K
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["rnn.1.embedding.new_weight", "rnn.1.embedding.new_bias"]
    new_before = head.new_weight.detach().clone()

    # the optimizer gets ALL parameters (the common mistake): frozen ones must still not move
    opt = OPTIMIZERS[opt_name](model.parameters())
    T = model.output_length(width)
    targets = torch.tensor([C, C + 1, 2, C + 2, 1, C])  # new and old classes
    for _ in range(25):
        model.train()  # BatchNorm must stay in eval
        lp = F.log_softmax(model(torch.rand(3, 1, 32, width)), 2)
        loss = F.ctc_loss(lp, targets, torch.full((3,), T), torch.tensor([2, 2, 2]))
        opt.zero_grad()
        loss.backward()
        opt.step()

    assert all(not m.training for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    after = model.state_dict()
    for k, v in before.items():
        if k.startswith("rnn.1.embedding."):
            continue
        assert torch.equal(after[k], v), k  # bitwise, buffers included
    assert torch.equal(head.old_weight, before["rnn.1.embedding.weight"])
    assert torch.equal(head.old_bias, before["rnn.1.embedding.bias"])
    assert not torch.equal(head.new_weight, new_before)  # the new rows did train

    model.eval()
    with torch.no_grad():
        new_logits = model(x)
    assert new_logits.shape == old_logits.shape[:2] + (C + K,)
    assert torch.equal(new_logits[..., :C], old_logits)  # bitwise unchanged
    # log-probabilities of the old classes shift only by the new normaliser
    shift = F.log_softmax(new_logits, 2)[..., :C] - F.log_softmax(old_logits, 2)
    expected = (torch.logsumexp(old_logits, 2) - torch.logsumexp(new_logits, 2))[..., None]
    torch.testing.assert_close(shift, expected.expand_as(shift))


def test_merge_classifier_round_trip():
    model = _trained_like_crnn(output="log_probs")
    expand_classifier(model, K)
    with torch.no_grad():
        model.rnn[1].embedding.new_weight.normal_()
    model.eval()
    x = torch.rand(2, 1, 32, 40)
    with torch.no_grad():
        out = model(x)
    assert merge_classifier(model) is model
    head = model.rnn[1].embedding
    assert type(head) is nn.Linear and head.out_features == C + K
    with torch.no_grad():
        torch.testing.assert_close(model(x), out, rtol=1e-6, atol=1e-6)
    # unfrozen again: everything trains and BatchNorm follows train()/eval() again
    assert all(p.requires_grad for p in model.parameters())
    model.train()
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(m.training and type(m) is nn.BatchNorm2d for m in bns)
    # a merged model saves as a plain CRNN with C + K classes
    fresh = CRNN(32, 1, C + K, 16, channels=SMALL, output="log_probs")
    fresh.load_state_dict(model.state_dict())


def test_expand_keeps_previous_requires_grad_flags():
    model = _trained_like_crnn()
    model.cnn.conv0.weight.requires_grad_(False)
    expand_classifier(model, 2)
    expand_classifier(model, 1)  # a second expansion: the 2 rows become old
    head = model.rnn[1].embedding
    assert head.old_features == C + 2 and head.out_features == C + 3 and model.nclass == C + 3
    merge_classifier(model)
    assert not model.cnn.conv0.weight.requires_grad
    assert model.cnn.conv1.weight.requires_grad


def test_generic_model_with_layer_name_and_pickling():
    torch.manual_seed(1)
    model = nn.Sequential(
        nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Sequential(nn.Linear(6, 5))
    )
    model.train()
    model(torch.randn(8, 4))
    x = torch.randn(3, 4)
    model.eval()
    with torch.no_grad():
        ref = model(x)
    expand_classifier(model, 2, layer="3.0")
    model.train()
    assert not model[1].training and isinstance(model[1], nn.BatchNorm1d)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x)[:, :5], ref)
    # deepcopy and pickling keep the frozen layer types
    clone = copy.deepcopy(model)
    buf = io.BytesIO()
    torch.save(model, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    for m in (clone, loaded):
        m.train()
        assert not m[1].training
        with torch.no_grad():
            m.eval()
            assert torch.equal(m(x), model(x))
    merge_classifier(model, "3.0")
    assert type(model[3][0]) is nn.Linear and model[3][0].out_features == 7


def test_load_with_new_classes():
    torch.manual_seed(2)
    old = _trained_like_crnn()
    ckpt = old.state_dict()
    model = CRNN(32, 1, C + K, 16, channels=SMALL, output="logits")
    own_rows = model.rnn[1].embedding.weight.detach()[C:].clone()
    # a plain load never silently skips the classifier
    with pytest.raises(RuntimeError, match="size mismatch"):
        model.load_state_dict(ckpt)
    assert load_with_new_classes(model, ckpt) is model
    head = model.rnn[1].embedding
    assert isinstance(head, ExpandedLinear)
    assert torch.equal(head.old_weight, ckpt["rnn.1.embedding.weight"])
    assert torch.equal(head.new_weight, own_rows)
    assert torch.equal(model.cnn.conv3.weight, ckpt["cnn.conv3.weight"])
    assert torch.equal(model.cnn.batchnorm4.running_var, ckpt["cnn.batchnorm4.running_var"])
    assert model.nclass == C + K
    old.eval()
    model.eval()
    x = torch.rand(2, 1, 32, 40)
    with torch.no_grad():
        assert torch.equal(model(x)[..., :C], old(x))


def test_load_with_new_classes_errors_and_equal_size():
    old = _trained_like_crnn()
    ckpt = old.state_dict()
    small = CRNN(32, 1, C - 2, 16, channels=SMALL)
    with pytest.raises(ValueError, match="more than"):
        load_with_new_classes(small, ckpt)
    other = CRNN(32, 1, C + 1, 16, channels=(8, 16, 16, 16, 24, 24, 32))
    with pytest.raises(RuntimeError, match="size mismatch"):
        load_with_new_classes(other, ckpt)
    assert type(other.rnn[1].embedding) is nn.Linear  # restored after the failure
    bad = dict(ckpt)
    bad.pop("cnn.conv2.bias")
    with pytest.raises(RuntimeError, match="Missing"):
        load_with_new_classes(CRNN(32, 1, C + 1, 16, channels=SMALL), bad)
    with pytest.raises(ValueError, match="state_dict"):
        load_with_new_classes(CRNN(32, 1, C + 1, 16, channels=SMALL), {"x": torch.zeros(1)})
    same = CRNN(32, 1, C, 16, channels=SMALL)
    load_with_new_classes(same, ckpt)
    assert type(same.rnn[1].embedding) is nn.Linear
    assert all(p.requires_grad for p in same.parameters())


def test_expand_rejects_bad_arguments():
    model = _trained_like_crnn()
    with pytest.raises(ValueError, match="num_new_classes"):
        expand_classifier(model, 0)
    with pytest.raises(TypeError, match="num_new_classes"):
        expand_classifier(model, 1.5)
    with pytest.raises(ValueError, match="layer"):
        expand_classifier(model, 1, layer="rnn.7.embedding")
    with pytest.raises(TypeError, match="layer"):
        expand_classifier(model, 1, layer="cnn.conv0")
    with pytest.raises(ValueError, match="layer"):
        expand_classifier(nn.Sequential(nn.Linear(2, 2)), 1)
    with pytest.raises(TypeError, match="model"):
        expand_classifier("model", 1)
    with pytest.raises(ValueError, match="expand_classifier"):
        merge_classifier(model)
    # nothing was changed by the failed calls
    assert all(p.requires_grad for p in model.parameters())


def test_frozen_on_device(device):
    model = _trained_like_crnn().to(device)
    before = _snapshot(model)
    expand_classifier(model, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    for _ in range(5):
        model.train()
        loss = model(torch.rand(2, 1, 32, 40, device=device)).logsumexp(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = model.state_dict()
    for k, v in before.items():
        if not k.startswith("rnn.1.embedding."):
            assert torch.equal(after[k], v), k
    assert torch.equal(model.rnn[1].embedding.old_weight, before["rnn.1.embedding.weight"])
