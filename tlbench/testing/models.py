"""The tiny real models the kit checks a strategy's ``adapt`` on: timm's test_resnet for
images, a two-layer BERT-like encoder for text. Imported only when a check needs them
(``import tlbench.testing`` loads no torch)."""

from __future__ import annotations

from tlbench.types import BackboneRequest


def kit_backbone(modality: str):
    """(a fresh tiny backbone of ``modality``, an example batch for it, its name in messages)."""
    import torch

    from tlbench.host.builtins.backbones import build_timm

    if modality == "image":
        built = build_timm(BackboneRequest(model="test_resnet", num_classes=3, pretrained=False))
        return built, torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)), "timm's test_resnet"
    if modality == "text":
        return (
            tiny_encoder(),
            torch.randint(0, 50, (2, 8), generator=torch.Generator().manual_seed(0)),
            "a tiny text encoder",
        )
    raise ValueError(f"the kit has no backbone of modality {modality!r}; use image or text")


def tiny_encoder():
    """A two-layer BERT-like encoder over token ids (vocabulary 50, width 16), 3 classes."""
    import torch
    from torch import nn

    from tlbench.types import BuiltBackbone, DataConfig

    torch.manual_seed(0)

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.query, self.key, self.value = nn.Linear(16, 16), nn.Linear(16, 16), nn.Linear(16, 16)

        def forward(self, x):
            weights = torch.softmax(self.query(x) @ self.key(x).transpose(1, 2) / 4.0, dim=-1)
            return weights @ self.value(x)

    class Layer(nn.Module):
        def __init__(self):
            super().__init__()
            self.attention, self.norm = Attention(), nn.LayerNorm(16)
            self.output = nn.Linear(16, 16)

        def forward(self, x):
            return self.norm(x + self.output(self.attention(x)))

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.embeddings = nn.Embedding(50, 16)
            self.layers = nn.ModuleList([Layer(), Layer()])
            self.head = nn.Linear(16, 3)

        def forward(self, ids):
            x = self.embeddings(ids)
            for layer in self.layers:
                x = layer(x)
            return self.head(x.mean(1))

    model = Encoder()
    names = [n for n, _ in model.named_parameters()]
    groups = (tuple(n for n in names if n.startswith("embeddings.")),) + tuple(
        tuple(n for n in names if n.startswith(f"layers.{i}.")) for i in range(2)
    )
    return BuiltBackbone(model, groups, ("head.weight", "head.bias"), DataConfig(8, (0.0,), (1.0,)))
