"""A backbone plugin: a small CNN of our own, with optional local weights.

``build`` returns the model with a fresh head of ``num_classes`` outputs, its
parameters in groups from input to output (freeze depth counts these), the
head's parameter names, and the input size and normalization it expects.
"""

import torch
from torch import nn

import tlbench
from tlbench.types import Backbone, BuiltBackbone, DataConfig, UserError


class TinyCNN(nn.Module):
    def __init__(self, num_classes: int):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.block1 = nn.Sequential(nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU())
        self.block2 = nn.Sequential(nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.BatchNorm2d(64), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(64, num_classes)

    def forward(self, x):
        x = self.block2(self.block1(self.stem(x)))
        return self.head(self.pool(x).flatten(1))


def build_tiny_cnn(request):
    model = TinyCNN(request.num_classes)
    if request.pretrained:
        if request.weights is None:  # never fall back to random weights silently
            raise UserError("backbone tiny_cnn: pretrained needs a weights file; set 'weights:' or 'pretrained: false'")
        state = torch.load(request.weights, map_location="cpu", weights_only=True)  # safe: tensors only
        state = {k: v for k, v in state.items() if not k.startswith("head.")}  # the head is always fresh
        model.load_state_dict(state, strict=False)
    names = [name for name, _ in model.named_parameters()]
    groups = tuple(tuple(n for n in names if n.startswith(prefix)) for prefix in ("stem.", "block1.", "block2."))
    return BuiltBackbone(
        model=model,
        groups=groups,
        head=tuple(n for n in names if n.startswith("head.")),
        data_config=DataConfig(input_size=32, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)),
    )


@tlbench.hookimpl
def tlbench_backbones():
    yield Backbone(name="tiny_cnn", build=build_tiny_cnn, description="a 3-block CNN, 32x32 input")
