"""Fine-tuning a trained recognizer to read new characters.

The final Linear (n_in -> C) grows to (n_in -> C + k): the C old rows are copied and kept
frozen, the k new rows are the only trainable parameters, every other parameter is frozen and
every normalisation layer (BatchNorm, ...) stays in eval mode even under ``model.train()``, so
its running statistics never move. Old rows live in buffers, which no optimizer ever sees:
after any number of Adam / AdamW (weight decay) / SGD (momentum, weight decay) steps the old
rows, the frozen parameters and the BatchNorm buffers are bitwise unchanged, and so are the
model's logits for the old classes (its log-probabilities shift only by the new normaliser).

:func:`merge_classifier` turns the layer back into one plain ``nn.Linear`` (same outputs) and
unfreezes the model; :func:`load_with_new_classes` loads a checkpoint whose classifier is
smaller than the model's through this path (never by silently skipping weights).
"""

import math
from typing import TYPE_CHECKING, Callable, Dict, List, Mapping, Optional, Tuple, cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _NormBase

from fastcrnn.ops._checks import positive_int

__all__ = [
    "ExpandedLinear",
    "expand_classifier",
    "merge_classifier",
    "load_with_new_classes",
    "frozen_norm_layers",
]

_RECORD = "_fastcrnn_finetune_requires_grad"

# ``init(new_weight (k, in), new_bias (k,) or None)``, run under no_grad
_InitFn = Callable[[torch.Tensor, Optional[torch.Tensor]], None]


class ExpandedLinear(nn.Module):
    """A Linear whose first ``old_features`` output rows are frozen buffers.

    Buffers ``old_weight`` (C, in) and ``old_bias`` (C,) hold the copied rows; Parameters
    ``new_weight`` (k, in) and ``new_bias`` (k,) the trainable new ones. forward(x (..., in))
    -> (..., C + k): the old outputs are computed by exactly the same ``F.linear`` as the
    original layer, so they are bitwise those of the original model. ``weight`` / ``bias``
    give the concatenated (C + k) matrices; :meth:`to_linear` makes a plain ``nn.Linear``.
    """

    old_weight: torch.Tensor  # buffers, registered in __init__
    old_bias: Optional[torch.Tensor]

    def __init__(self, old: nn.Linear, num_new: int, init: Optional[_InitFn] = None):
        super().__init__()
        if not isinstance(old, nn.Linear):
            raise TypeError(f"old must be an nn.Linear, got {type(old).__name__}")
        w = old.weight.detach()
        self.in_features = old.in_features
        self.old_features = old.out_features
        self.num_new = int(num_new)
        self.out_features = self.old_features + self.num_new
        self.register_buffer("old_weight", w.clone())
        self.register_buffer("old_bias", None if old.bias is None else old.bias.detach().clone())
        self.new_weight = nn.Parameter(
            torch.empty(self.num_new, self.in_features, dtype=w.dtype, device=w.device)
        )
        self.new_bias = (
            nn.Parameter(torch.empty(self.num_new, dtype=w.dtype, device=w.device))
            if old.bias is not None
            else None
        )
        with torch.no_grad():
            if init is None:
                # nn.Linear's own initialisation for the new rows
                bound = 1.0 / math.sqrt(self.in_features) if self.in_features else 0.0
                nn.init.kaiming_uniform_(self.new_weight, a=math.sqrt(5))
                if self.new_bias is not None:
                    nn.init.uniform_(self.new_bias, -bound, bound)
            else:
                init(self.new_weight, self.new_bias)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, old_features={self.old_features} (frozen), "
            f"new_features={self.num_new}, bias={self.new_bias is not None}"
        )

    @property
    def weight(self) -> torch.Tensor:
        return torch.cat([self.old_weight, self.new_weight], 0)

    @property
    def bias(self) -> Optional[torch.Tensor]:
        if self.new_bias is None:
            return None
        # old_bias is set whenever new_bias is (both follow the original layer's bias)
        return torch.cat([cast(torch.Tensor, self.old_bias), self.new_bias], 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [
                F.linear(x, self.old_weight, self.old_bias),
                F.linear(x, self.new_weight, self.new_bias),
            ],
            dim=-1,
        )

    def to_linear(self) -> nn.Linear:
        """One plain nn.Linear (in, C + k) with the concatenated weights (trainable)."""
        w = self.old_weight
        lin = nn.Linear(
            self.in_features,
            self.out_features,
            bias=self.new_bias is not None,
            device=w.device,
            dtype=w.dtype,
        )
        with torch.no_grad():
            lin.weight.copy_(self.weight)
            if lin.bias is not None:
                lin.bias.copy_(cast(torch.Tensor, self.bias))  # not None: lin has a bias
        return lin


# ---- normalisation layers that stay in eval mode --------------------------------------------

if TYPE_CHECKING:
    _FrozenNormBase = nn.Module  # the mixin only ever precedes a normalisation Module
else:
    _FrozenNormBase = object


class _FrozenNorm(_FrozenNormBase):
    """Mixin: ``train(mode)`` keeps the layer (and its children) in eval mode."""

    _fastcrnn_frozen_norm = True

    def train(self, mode: bool = True):
        return super().train(False)


_FROZEN_CLASSES: Dict[type, type] = {}


def _frozen_class(cls: type) -> type:
    if getattr(cls, "_fastcrnn_frozen_norm", False):
        return cls
    if cls not in _FROZEN_CLASSES:
        frozen = type(
            "Frozen" + cls.__name__,
            (_FrozenNorm, cls),
            {"__module__": __name__, "_fastcrnn_original": cls},
        )
        _FROZEN_CLASSES[cls] = frozen
        globals()[frozen.__name__] = frozen  # picklable by name
    return _FROZEN_CLASSES[cls]


for _cls in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm):
    _frozen_class(_cls)


def _freeze_norm(module: nn.Module) -> None:
    module.__class__ = _frozen_class(type(module))
    module.train(False)


def _unfreeze_norm(module: nn.Module, training: bool) -> None:
    original = getattr(type(module), "_fastcrnn_original", None)
    if original is not None:
        module.__class__ = original
    module.train(training)


def frozen_norm_layers(model: nn.Module) -> List[str]:
    """Names of the normalisation layers kept in eval mode by :func:`expand_classifier`."""
    return [n for n, m in model.named_modules() if getattr(m, "_fastcrnn_frozen_norm", False)]


# ---- public API -----------------------------------------------------------------------------


def _resolve(model: nn.Module, layer: Optional[str]) -> Tuple[str, nn.Module, str]:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if layer is None:
        layer = getattr(model, "classifier_name", None)
        if layer is None:
            raise ValueError(
                "layer must name the Linear to expand (dotted name, e.g. "
                "'rnn.1.embedding'): the model has no classifier_name"
            )
    if not isinstance(layer, str) or not layer:
        raise TypeError(f"layer must be a non-empty str (a dotted module name), got {layer!r}")
    parent_name, _, attr = layer.rpartition(".")
    try:
        parent = model.get_submodule(parent_name) if parent_name else model
        target = getattr(parent, attr)
    except AttributeError as e:
        raise ValueError(f"layer {layer!r} is not a submodule of the model") from e
    if not isinstance(target, nn.Module):
        raise ValueError(f"layer {layer!r} is not a submodule of the model")
    return layer, parent, attr


def _set_nclass(model: nn.Module, layer: str, out_features: int) -> None:
    if layer == getattr(model, "classifier_name", None) and isinstance(
        getattr(model, "nclass", None), int
    ):
        # torch's stubs type Module.__setattr__'s value as Tensor | Module; any value is
        # allowed at runtime (an int attribute here)
        model.nclass = out_features  # type: ignore[assignment]


def expand_classifier(
    model: nn.Module,
    num_new_classes: int,
    layer: Optional[str] = None,
    init: Optional[_InitFn] = None,
) -> nn.Module:
    """Grows a Linear by ``num_new_classes`` output rows and freezes everything else, in place.

    Args:
        model: any nn.Module (a :class:`fastcrnn.nn.CRNN` knows its classifier).
        num_new_classes: k >= 1 rows to add (new classes get indices C .. C + k - 1).
        layer: dotted name of the Linear; default ``model.classifier_name`` (the CRNN's
            ``"rnn.1.embedding"``). An already expanded layer is merged first, so its rows
            then count as old (frozen) too.
        init: optional ``init(new_weight (k, in), new_bias (k,) or None)`` run under no_grad;
            default nn.Linear's initialisation.

    After the call only ``<layer>.new_weight`` / ``<layer>.new_bias`` require grad; every other
    parameter has requires_grad=False (the previous flags are remembered for
    :func:`merge_classifier`), and every normalisation layer stays in eval mode under
    ``model.train()``. A CRNN's ``nclass`` becomes C + k. Returns the model.
    """
    num_new_classes = positive_int(num_new_classes, "num_new_classes")
    if init is not None and not callable(init):
        raise TypeError("init must be callable or None")
    layer, parent, attr = _resolve(model, layer)
    target = getattr(parent, attr)
    if isinstance(target, ExpandedLinear):
        target = target.to_linear()
    if not isinstance(target, nn.Linear):
        raise TypeError(f"layer {layer!r} must be an nn.Linear, got {type(target).__name__}")
    if not hasattr(model, _RECORD):
        object.__setattr__(
            model, _RECORD, {n: p.requires_grad for n, p in model.named_parameters()}
        )
    expanded = ExpandedLinear(target, int(num_new_classes), init)
    setattr(parent, attr, expanded)
    for p in model.parameters():
        p.requires_grad_(False)
    for p in expanded.parameters():
        p.requires_grad_(True)
    for m in model.modules():
        if isinstance(m, _NormBase):
            _freeze_norm(m)
    _set_nclass(model, layer, expanded.out_features)
    return model


def merge_classifier(
    model: nn.Module, layer: Optional[str] = None, unfreeze: bool = True
) -> nn.Module:
    """Turns an :class:`ExpandedLinear` back into one plain nn.Linear (same outputs), in place.

    layer: its dotted name; default ``model.classifier_name``, or the model's only
    ExpandedLinear. With ``unfreeze`` (default) the requires_grad flags from before
    :func:`expand_classifier` are restored (the merged Linear trains) and normalisation layers
    follow ``model.train()`` again. Returns the model.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if layer is None and getattr(model, "classifier_name", None) is None:
        found = [n for n, m in model.named_modules() if isinstance(m, ExpandedLinear)]
        if len(found) != 1:
            raise ValueError(
                f"layer must be given: the model has {len(found)} expanded classifiers"
            )
        layer = found[0]
    layer, parent, attr = _resolve(model, layer)
    target = getattr(parent, attr)
    if not isinstance(target, ExpandedLinear):
        raise ValueError(
            f"layer {layer!r} is not an expanded classifier (got "
            f"{type(target).__name__}); call expand_classifier first"
        )
    merged = target.to_linear()
    setattr(parent, attr, merged)
    _set_nclass(model, layer, merged.out_features)
    if unfreeze:
        record = getattr(model, _RECORD, {})
        for name, p in model.named_parameters():
            p.requires_grad_(record.get(name, True))
        for p in merged.parameters():
            p.requires_grad_(True)
        for m in model.modules():
            if getattr(m, "_fastcrnn_frozen_norm", False):
                _unfreeze_norm(m, model.training)
        if hasattr(model, _RECORD):
            object.__delattr__(model, _RECORD)
    else:
        for p in merged.parameters():
            p.requires_grad_(False)
    return model


def load_with_new_classes(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], layer: Optional[str] = None
) -> nn.Module:
    """Loads a checkpoint whose classifier has fewer classes than the model's, explicitly.

    The model (built with C + k classes) and the checkpoint (C classes) must agree on every
    other key and shape (checked strictly: missing, unexpected or mismatched keys raise). The
    checkpoint's C rows become the frozen old rows and the model's own rows C .. C + k - 1
    the initial values of the k trainable new rows (as by :func:`expand_classifier`). With
    k = 0 this is a plain strict ``load_state_dict`` (nothing frozen). Returns the model.
    """
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict must be a mapping, got {type(state_dict).__name__}")
    layer, parent, attr = _resolve(model, layer)
    target = getattr(parent, attr)
    if not isinstance(target, nn.Linear):
        raise TypeError(f"layer {layer!r} must be an nn.Linear, got {type(target).__name__}")
    key = f"{layer}.weight"
    if key not in state_dict:
        raise ValueError(f"state_dict has no {key!r}: it is not a checkpoint of this model")
    w = state_dict[key]
    if not isinstance(w, torch.Tensor) or w.dim() != 2 or w.shape[1] != target.in_features:
        raise ValueError(
            f"state_dict[{key!r}] must have shape (C, {target.in_features}), got "
            f"{tuple(w.shape) if isinstance(w, torch.Tensor) else type(w).__name__}"
        )
    old_c, new_c = w.shape[0], target.out_features
    if old_c > new_c:
        raise ValueError(
            f"the checkpoint's classifier has {old_c} classes, more than the "
            f"model's {new_c}: build the model with at least {old_c}"
        )
    if old_c == new_c:
        model.load_state_dict(state_dict, strict=True)
        return model
    p = target.weight
    small = nn.Linear(
        target.in_features, old_c, bias=target.bias is not None, device=p.device, dtype=p.dtype
    )
    init_w = target.weight.detach()[old_c:].clone()
    init_b = None if target.bias is None else target.bias.detach()[old_c:].clone()
    setattr(parent, attr, small)
    try:
        model.load_state_dict(state_dict, strict=True)
    except Exception:
        setattr(parent, attr, target)
        raise

    def init(weight, bias):
        weight.copy_(init_w)
        if bias is not None:
            bias.copy_(init_b)

    return expand_classifier(model, new_c - old_c, layer, init=init)
