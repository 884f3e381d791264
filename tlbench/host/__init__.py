"""The plugin host: hook specifications, loading plugins, the checks on what plugin code
returns, event delivery, live progress, and the built-in plugins.

Layers and the module map: docs/internals.md.
"""
