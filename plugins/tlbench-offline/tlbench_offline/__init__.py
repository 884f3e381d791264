"""tlbench-offline: pretrained EfficientNet-Lite backbones and small real datasets, offline."""

__version__ = "0.1.0"
