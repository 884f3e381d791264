"""Built-in plugins. They are registered through the same path as installed
plugins and import only the public API (``tlbench``, ``tlbench.types``,
``tlbench.splits``)."""
