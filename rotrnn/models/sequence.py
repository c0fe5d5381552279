"""The deep model around a recurrent layer, as the authors ran it (their s5/layers.py and s5/seq_model.py):

    encoder (embedding for tokens, linear for continuous inputs)
    n_layers × [ skip = x; (pre-norm) → layer → activation (GELU / GLU variants, dropout) → x = skip + x; (post-norm) ]
    pooling (masked mean over the true length, last step, or none for per-position outputs) → linear decoder

and the retrieval dual encoder, [o₀, o₁, o₀ − o₁, o₀ ⊙ o₁] → Dense → GELU → Dense (Tay et al. 2020; S4; S5).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from rotrnn.choices import ACTIVATIONS, NORMS, POOLINGS
from rotrnn.nn import LAYERS


def make_layer(kind: str, d_model: int, **kwargs: Any) -> nn.Module:
    if kind not in LAYERS:
        raise ValueError(f"unknown layer {kind!r}; choose one of {sorted(LAYERS)}")
    return LAYERS[kind](d_model, **kwargs)


def length_mask(lengths: torch.Tensor | None, L: int, device: torch.device) -> torch.Tensor | None:
    """(B, L, 1) float mask of valid steps, or None when every sequence is full length."""
    if lengths is None:
        return None
    if lengths.dim() != 1:
        raise ValueError(f"lengths must be a (batch,) tensor with values in [1, {L}], got shape "
                         f"{tuple(lengths.shape)}")
    if lengths.device.type == "cpu" and not torch.compiler.is_compiling():
        if (lengths < 1).any() or (lengths > L).any():
            raise ValueError(f"lengths must be a (batch,) tensor with values in [1, {L}], got {lengths.tolist()}")
    else:
        # checked on the device: a host read would synchronise a GPU every step and break a compiled graph. The
        # message is a constant: formatting L into it would make torch.compile specialise on the length and
        # recompile for every new batch length
        torch._assert_async(((lengths >= 1) & (lengths <= L)).all(), "lengths must lie in [1, sequence length]")
    return (torch.arange(L, device=device)[None, :] < lengths.to(device)[:, None]).unsqueeze(-1).float()


class TimeSharedDropout(nn.Module):
    """Dropout with one mask per (example, feature), shared over time (flax ``broadcast_dims=[0]`` per example)."""

    def __init__(self, p: float):
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"dropout must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        keep = torch.empty(x.shape[0], 1, x.shape[2], device=x.device, dtype=x.dtype).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)


class Activation(nn.Module):
    """The four mixing activations of S5/RotRNN's block (authors' s5/layers.py), dropout included."""

    def __init__(self, kind: str, d_model: int, dropout: float):
        super().__init__()
        if kind not in ACTIVATIONS:
            raise ValueError(f"unknown activation {kind!r}; choose one of {ACTIVATIONS}")
        self.kind = kind
        self.drop = TimeSharedDropout(dropout)
        self.gelu = nn.GELU(approximate="tanh")  # jax.nn.gelu's default
        if kind == "full_glu":
            self.dense1 = nn.Linear(d_model, d_model)
        if kind != "gelu":
            self.dense2 = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "gelu":
            return self.drop(self.gelu(x))
        g = self.drop(self.gelu(x))
        if self.kind == "full_glu":
            x = self.dense1(g) * torch.sigmoid(self.dense2(g))
        elif self.kind == "half_glu1":
            x = g * torch.sigmoid(self.dense2(g))
        else:  # half_glu2: GELU only on the gate's input
            x = x * torch.sigmoid(self.dense2(g))
        return self.drop(x)


class Norm(nn.Module):
    """BatchNorm (statistics over batch and time) or LayerNorm on (B, L, d).

    ``bn_momentum`` is in the authors' (flax) convention: running = m·running + (1 - m)·batch.
    """

    def __init__(self, kind: str, d_model: int, bn_momentum: float = 0.95):
        super().__init__()
        if kind not in NORMS:
            raise ValueError(f"unknown norm {kind!r}; choose one of {NORMS}")
        self.kind = kind
        self.norm = nn.BatchNorm1d(d_model, momentum=1 - bn_momentum) if kind == "batch" else nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "batch":
            # statistics over batch and time as BatchNorm1d over (B·L, d) rows: the same numbers as normalising the
            # (B, d, L) transpose, on a contiguous layout (its backward measured 2-5x faster on CPU)
            return self.norm(x.reshape(-1, x.shape[-1])).view_as(x)
        return self.norm(x)


class SequenceBlock(nn.Module):
    def __init__(self, layer: nn.Module, d_model: int, norm: str, prenorm: bool, activation: str, dropout: float,
                 bn_momentum: float = 0.95):
        super().__init__()
        self.layer = layer
        self.norm = Norm(norm, d_model, bn_momentum)
        self.prenorm = prenorm
        self.activation = Activation(activation, d_model, dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, step: float = 1.0,
                maps: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        skip = x
        if self.prenorm:
            x = self.norm(x)
        if mask is not None:  # padded steps must feed nothing into the recurrence (the reverse scan reads them first)
            x = x * mask
        x = self.activation(self.layer(x, step=step, maps=maps))
        x = skip + x
        if not self.prenorm:
            x = self.norm(x)
        return x


class SequenceBackbone(nn.Module):
    """Encoder and the stack of blocks: inputs (B, L) tokens or (B, L, d_input) values -> (B, L, d_model)."""

    def __init__(
        self,
        layer: str,
        d_input: int,
        d_model: int,
        n_layers: int,
        tokens: bool = False,
        layer_kwargs: dict[str, Any] | None = None,
        norm: str = "batch",
        prenorm: bool = True,
        activation: str = "half_glu1",
        dropout: float = 0.0,
        bn_momentum: float = 0.95,
    ):
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"n_layers must be positive, got {n_layers}")
        self.tokens = tokens
        self.d_input = d_input
        self.encoder = nn.Embedding(d_input, d_model) if tokens else nn.Linear(d_input, d_model)
        self.blocks = nn.ModuleList(
            SequenceBlock(make_layer(layer, d_model, **(layer_kwargs or {})), d_model, norm, prenorm, activation,
                          dropout, bn_momentum)
            for _ in range(n_layers)
        )

    def forward(self, inputs: torch.Tensor, mask: torch.Tensor | None = None, step: float = 1.0) -> torch.Tensor:
        if self.tokens:
            if inputs.dim() != 2 or inputs.is_floating_point():
                raise ValueError(f"token model expects integer inputs (batch, length), got {inputs.dtype} "
                                 f"{tuple(inputs.shape)}")
        elif inputs.dim() != 3 or inputs.shape[-1] != self.d_input:
            raise ValueError(f"model expects inputs (batch, length, {self.d_input}), got {tuple(inputs.shape)}")
        x = self.encoder(inputs)
        # every layer's eigenbasis maps in one call (RotRNN: one expm for all layers; fewer GPU kernel launches)
        layers = [block.layer for block in self.blocks]
        for block, maps in zip(self.blocks, type(layers[0]).projections_of(layers)):
            x = block(x, mask, step, maps)
        return x


def pool(x: torch.Tensor, mask: torch.Tensor | None, lengths: torch.Tensor | None, mode: str) -> torch.Tensor:
    if mode == "none":
        return x
    if mode == "last":
        if lengths is None:
            return x[:, -1]
        return x[torch.arange(x.shape[0], device=x.device), lengths.to(x.device) - 1]
    if mask is None:
        return x.mean(1)
    return (x * mask).sum(1) / mask.sum(1)


class SequenceClassifier(nn.Module):
    """Backbone → pooling → Dense(n_classes). With pooling 'none' it returns per-position outputs (B, L, n_out)."""

    def __init__(self, layer: str, d_input: int, n_classes: int, d_model: int = 128, n_layers: int = 6,
                 pooling: str = "mean", **backbone_kwargs: Any):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; choose one of {POOLINGS}")
        self.pooling = pooling
        self.backbone = SequenceBackbone(layer, d_input, d_model, n_layers, **backbone_kwargs)
        self.decoder = nn.Linear(d_model, n_classes)

    def forward(self, inputs: torch.Tensor, lengths: torch.Tensor | None = None, step: float = 1.0) -> torch.Tensor:
        mask = length_mask(lengths, inputs.shape[1], inputs.device)
        x = self.backbone(inputs, mask, step)
        return self.decoder(pool(x, mask, lengths, self.pooling))


class RetrievalClassifier(nn.Module):
    """AAN dual encoder: one backbone encodes both documents; [o₀, o₁, o₀ − o₁, o₀ ⊙ o₁] → MLP → classes."""

    def __init__(self, layer: str, d_input: int, n_classes: int = 2, d_model: int = 128, n_layers: int = 6,
                 **backbone_kwargs: Any):
        super().__init__()
        self.backbone = SequenceBackbone(layer, d_input, d_model, n_layers, **backbone_kwargs)
        self.head = nn.Sequential(nn.Linear(4 * d_model, d_model), nn.GELU(approximate="tanh"),
                                  nn.Linear(d_model, n_classes))

    def encode(self, inputs: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
        mask = length_mask(lengths, inputs.shape[1], inputs.device)
        return pool(self.backbone(inputs, mask), mask, lengths, "mean")

    def forward(self, inputs: torch.Tensor, lengths: torch.Tensor | None, inputs2: torch.Tensor,
                lengths2: torch.Tensor | None) -> torch.Tensor:
        # both documents go through the backbone as one batch, as in the reference (BatchNorm sees 2·bsz documents)
        L = max(inputs.shape[1], inputs2.shape[1])
        pad = lambda t: nn.functional.pad(t, (0, L - t.shape[1]) if t.dim() == 2 else (0, 0, 0, L - t.shape[1]))
        both = torch.cat([pad(inputs), pad(inputs2)], 0)
        lens = None
        if lengths is not None or lengths2 is not None:
            full = lambda t, x: t if t is not None else torch.full((x.shape[0],), x.shape[1], device=x.device)
            lens = torch.cat([full(lengths, inputs), full(lengths2, inputs2)])
        o0, o1 = self.encode(both, lens).chunk(2)
        return self.head(torch.cat([o0, o1, o0 - o1, o0 * o1], -1))
