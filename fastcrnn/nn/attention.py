"""Attention layers: additive (MLP / Bahdanau) and scaled dot-product, with masked softmax."""

import math
from typing import Optional, Sequence, Union

import torch
from torch import nn

from fastcrnn.functional import masked_softmax
from fastcrnn.ops._checks import positive_int, probability

__all__ = ["MLPAttention", "AdditiveAttention", "DotProductAttention"]


def _check_qkv(query, key, value, valid_lens, q_dim=None, k_dim=None):
    for name, t in (("query", query), ("key", key), ("value", value)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 3:
            raise ValueError(
                f"{name} must be 3-D (batch, steps, features), got shape {tuple(t.shape)}"
            )
        if not t.dtype.is_floating_point:
            raise TypeError(f"{name} must be floating point, got {t.dtype}")
    B = query.shape[0]
    if key.shape[0] != B or value.shape[0] != B:
        raise ValueError(
            f"query, key and value must share the batch size, got "
            f"{query.shape[0]}, {key.shape[0]}, {value.shape[0]}"
        )
    if key.shape[1] != value.shape[1]:
        raise ValueError(
            f"key and value must have the same number of steps, got "
            f"{key.shape[1]} and {value.shape[1]}"
        )
    if q_dim is not None and query.shape[-1] != q_dim:
        raise ValueError(f"query must have {q_dim} features, got {query.shape[-1]}")
    if k_dim is not None and key.shape[-1] != k_dim:
        raise ValueError(f"key must have {k_dim} features, got {key.shape[-1]}")
    if query.device != key.device or key.device != value.device:
        raise ValueError("query, key and value must be on the same device")


def _d2l_scoring_vector_name(module, state_dict, prefix, *args) -> None:
    """load_state_dict pre-hook: d2l's AdditiveAttention calls the scoring vector ``w_v``."""
    old, new = prefix + "w_v.weight", prefix + "v.weight"
    if old in state_dict and new not in state_dict:
        state_dict[new] = state_dict.pop(old)


class _Attention(nn.Module):
    """What both attention layers do with their scores: a softmax over the first ``valid_lens``
    keys (kept in ``self.attention_weights``), dropout, then the weighted sum of the values.
    A subclass checks its inputs in ``_check`` and scores them in ``_scores``."""

    dropout: nn.Dropout
    attention_weights: Optional[torch.Tensor]

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        valid_lens: Union[torch.Tensor, Sequence[int], None] = None,
    ) -> torch.Tensor:
        self._check(query, key, value, valid_lens)
        self.attention_weights = masked_softmax(self._scores(query, key), valid_lens)
        return torch.bmm(self.dropout(self.attention_weights), value)

    def _check(self, query, key, value, valid_lens) -> None:
        raise NotImplementedError

    def _scores(self, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        """(B, Q, K) scores of every query against every key."""
        raise NotImplementedError


class MLPAttention(_Attention):
    """Additive attention (d2l's MLPAttention / AdditiveAttention, Bahdanau et al.).

    score(q, k) = v · tanh(W_q q + W_k k), with W_q: Linear(query_size, units, bias=False),
    W_k: Linear(key_size, units, bias=False), v: Linear(units, 1, bias=False); softmax over the
    first ``valid_lens`` keys; dropout on the weights. (The tutorial's two-argument form,
    ``ipt_dim``, is key_size == query_size.)

    forward(query (B, Q, query_size), key (B, K, key_size), value (B, K, Dv), valid_lens None,
    (B,) or (B, Q)) -> (B, Q, Dv). The weights of the last call, (B, Q, K), are kept in
    ``self.attention_weights`` (before dropout).

    The scoring vector is ``v`` (the tutorial's name); a state_dict from d2l's
    ``AdditiveAttention``, which names it ``w_v``, loads too: ``w_v.weight`` is read as
    ``v.weight``.
    """

    def __init__(self, key_size: int, query_size: int, units: int, dropout: float = 0.0):
        super().__init__()
        key_size = positive_int(key_size, "key_size")
        query_size = positive_int(query_size, "query_size")
        units = positive_int(units, "units")
        self.W_k = nn.Linear(key_size, units, bias=False)
        self.W_q = nn.Linear(query_size, units, bias=False)
        self.v = nn.Linear(units, 1, bias=False)
        self.dropout = nn.Dropout(probability(dropout))
        self.attention_weights: Optional[torch.Tensor] = None
        self.register_load_state_dict_pre_hook(_d2l_scoring_vector_name)

    def _check(self, query, key, value, valid_lens) -> None:
        _check_qkv(query, key, value, valid_lens, self.W_q.in_features, self.W_k.in_features)

    def _scores(self, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        q, k = self.W_q(query), self.W_k(key)
        features = torch.tanh(q.unsqueeze(2) + k.unsqueeze(1))  # (B, Q, K, units)
        return self.v(features).squeeze(-1)  # (B, Q, K)


AdditiveAttention = MLPAttention


class DotProductAttention(_Attention):
    """Scaled dot-product attention: softmax(q kᵀ / sqrt(d)) v over the first valid_lens keys.

    forward(query (B, Q, d), key (B, K, d), value (B, K, Dv), valid_lens None, (B,) or (B, Q))
    -> (B, Q, Dv); ``self.attention_weights`` (B, Q, K) holds the last call's weights.
    """

    def __init__(self, dropout: float = 0.0):
        super().__init__()
        self.dropout = nn.Dropout(probability(dropout))
        self.attention_weights: Optional[torch.Tensor] = None

    def _check(self, query, key, value, valid_lens) -> None:
        _check_qkv(query, key, value, valid_lens)
        if query.shape[-1] != key.shape[-1]:
            raise ValueError(
                f"query and key must have the same number of features, got "
                f"{query.shape[-1]} and {key.shape[-1]}"
            )

    def _scores(self, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        return torch.bmm(query, key.transpose(1, 2)) / math.sqrt(query.shape[-1])
