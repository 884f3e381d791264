"""Parameter-efficient fine-tuning strategies for tlbench: ``bitfit`` and ``lora``."""

__version__ = "0.1.0"
