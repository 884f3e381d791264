"""A Hugging Face BERT-family encoder as a tlbench backbone: stages that pass one tensor.

tlbench freezes a backbone by groups, caches what a frozen prefix outputs and meters
a forward pass by FLOPs, all through module boundaries that take and give one tensor
(as a CNN's stages do). A transformer layer needs its attention mask too, so the
stages here carry it along as one more channel: the state between stages is
``[batch, tokens, hidden + 1]``, the hidden states with the mask (1: a token, 0:
padding) as the last channel. The model's input is ``[batch, 2, max_length]``: token
ids and the attention mask, stacked (what :class:`TextInputs` makes of a text).

    embed      the token, position and type embeddings (group 0)
    layers.i   one transformer layer each (groups 1..n)
    pool       mean over the tokens (sentence-transformers' pooling), or the [CLS]
               token through the checkpoint's pooler (its own group, when it has one)
    head       the fresh linear classifier

A frozen prefix that ends at ``layers.3`` is cached as that layer's output, a frozen
encoder (a linear probe) as the pooled vector per text, exactly as for a CNN.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tlbench.types import BadExample, UserError

POOLING = ("mean", "cls")


class Embed(nn.Module):
    def __init__(self, embeddings: nn.Module):
        super().__init__()
        self.embeddings = embeddings

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ids, mask = x[:, 0], x[:, 1]
        hidden = self.embeddings(input_ids=ids)
        return torch.cat([hidden, mask.unsqueeze(-1).to(hidden.dtype)], dim=-1)


class Layer(nn.Module):
    """One transformer layer on the state: attention masked where the mask channel is 0."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        hidden, mask = state[..., :-1], state[..., -1]
        additive = (1.0 - mask[:, None, None, :].to(hidden.dtype)) * torch.finfo(hidden.dtype).min
        out = self.layer(hidden, attention_mask=additive)
        out = out[0] if isinstance(out, tuple) else out  # transformers 4 returns a tuple, 5 the tensor
        return torch.cat([out, mask.unsqueeze(-1).to(out.dtype)], dim=-1)


class Pool(nn.Module):
    """[batch, tokens, hidden + 1] -> [batch, hidden]."""

    def __init__(self, pooling: str, pooler: nn.Module | None = None):
        super().__init__()
        self.pooling = pooling
        self.pooler = pooler  # BERT's dense + tanh on [CLS], used with pooling "cls" when the checkpoint has one

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        hidden, mask = state[..., :-1], state[..., -1:]
        if self.pooling == "cls":
            return self.pooler(hidden) if self.pooler is not None else hidden[:, 0]
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)

    def extra_repr(self) -> str:
        return f"pooling={self.pooling}"


class TextEncoder(nn.Module):
    def __init__(self, hf_model: nn.Module, num_classes: int, pooling: str):
        super().__init__()
        self.embed = Embed(hf_model.embeddings)
        self.layers = nn.ModuleList(Layer(layer) for layer in encoder_layers(hf_model))
        pooler = getattr(hf_model, "pooler", None) if pooling == "cls" else None
        self.pool = Pool(pooling, pooler)
        self.head = nn.Linear(hf_model.config.hidden_size, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        state = self.embed(x)
        for layer in self.layers:
            state = layer(state)
        return self.head(self.pool(state))


def encoder_layers(hf_model: nn.Module) -> nn.ModuleList:
    """The transformer layers of a BERT-family model (BERT, RoBERTa, MiniLM, ELECTRA:
    ``encoder.layer``), or a clear error for an architecture laid out otherwise."""
    layers = getattr(getattr(hf_model, "encoder", None), "layer", None)
    if not isinstance(layers, nn.ModuleList) or not hasattr(hf_model, "embeddings"):
        raise UserError(
            f"{type(hf_model).__name__} is not laid out as a BERT-family encoder (embeddings, encoder.layer); "
            "tlbench-text supports BERT, RoBERTa, MiniLM, ELECTRA and models built like them"
        )
    return layers


def groups_of(model: TextEncoder) -> tuple[tuple[str, ...], ...]:
    """embed, each layer, and the pooler when it has parameters: input to output."""
    names = [n for n, _ in model.named_parameters()]
    groups = [tuple(n for n in names if n.startswith("embed."))]
    groups += [tuple(n for n in names if n.startswith(f"layers.{i}.")) for i in range(len(model.layers))]
    pooler = tuple(n for n in names if n.startswith("pool."))
    return tuple(groups + ([pooler] if pooler else []))


# --------------------------------------------------------------------------- inputs


class Tokenize:
    """A text -> LongTensor [2, max_length]: token ids and attention mask, padded or cut."""

    def __init__(self, tokenizer, max_length: int, identity: str):
        self.tokenizer, self.max_length, self.identity = tokenizer, max_length, identity

    def __call__(self, text: Any) -> torch.Tensor:
        if not isinstance(text, str):
            raise BadExample(f"expected a text (str), got {type(text).__name__}")
        encoded = self.tokenizer(text, max_length=self.max_length, truncation=True, padding="max_length")
        return torch.tensor([encoded["input_ids"], encoded["attention_mask"]], dtype=torch.long)

    def __repr__(self) -> str:  # part of the feature cache's key: what the tokens depend on
        return f"Tokenize({self.identity}, max_length={self.max_length})"


class TextInputs:
    """What a text backbone reads (tlbench.types.Inputs): str examples through its
    tokenizer, at ``max_length`` tokens (the config's ``max_length``)."""

    modality = "text"
    size_field = "max_length"

    def __init__(self, tokenizer, size: int, identity: str, positions: int):
        self.tokenizer, self.size, self.identity, self.positions = tokenizer, size, identity, positions

    def transforms(self, size: int, augment: bool):
        """The same tokenization for training and evaluation (text is not augmented)."""
        tokenize = Tokenize(self.tokenizer, self._fits(size), self.identity)
        return tokenize, tokenize

    def example(self, n: int, size: int) -> torch.Tensor:
        """n texts of ``size`` real tokens (no padding): costs at the full length."""
        vocab = len(self.tokenizer)
        self._fits(size)
        ids = torch.randint(1000 if vocab > 2000 else 1, vocab, (n, size), generator=torch.Generator().manual_seed(0))
        return torch.stack([ids, torch.ones_like(ids)], dim=1)

    def memory_probe(self, size: int) -> tuple[int, float]:
        """Measured at the full length (short, and attention makes growth more than linear)."""
        return size, 1.0

    def _fits(self, size: int) -> int:
        if size > self.positions:
            raise UserError(
                f"max_length {size}: the encoder has {self.positions} positions; give at most {self.positions}"
            )
        least = self.tokenizer.num_special_tokens_to_add() + 1  # [CLS] and [SEP] around at least one token
        if size < least:
            raise UserError(
                f"max_length {size}: a text needs at least {least} tokens ([CLS], one word, [SEP]); give at least {least}"
            )
        return size


def tokenizer_identity(tokenizer, source: str | Path) -> str:
    """The tokenizer's name and a hash of its vocabulary and settings."""
    h = hashlib.sha256(repr(sorted(tokenizer.get_vocab().items())).encode())
    h.update(f"{type(tokenizer).__name__}{getattr(tokenizer, 'do_lower_case', '')}".encode())
    return f"{Path(str(source)).name}:{h.hexdigest()[:12]}"
