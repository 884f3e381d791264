"""The engine: torch only, no Optuna. What a backbone reads (inputs, pipeline), the frozen-
prefix feature cache, training, compute costs.

Layers and the module map: docs/internals.md.
"""
