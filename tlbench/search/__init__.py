"""The Optuna side: plan and preflight, the screen, sampler and pruner, the portfolio,
studies, one trial.

Layers and the module map: docs/internals.md.
"""
