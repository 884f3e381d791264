"""Base layer: statistics, the searched-value grammar, threads, interrupts; nothing of a run
(beside ``tlbench.types`` and ``tlbench.splits``).

Layers and the module map: docs/internals.md.
"""
