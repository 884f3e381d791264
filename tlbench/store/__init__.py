"""Storage layer: Optuna storage URLs and engines, and the typed, versioned records of a
trial (``TrialRecord``) and a study (``StudyRecord``) with their read rules. Readers of a
finished run import only this, the config schema and ``tlbench.types``.

Layers and the module map: docs/internals.md.
"""
