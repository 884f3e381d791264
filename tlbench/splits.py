"""Seeded, stratified index splits and subsamples; public, for dataset plugins too.

Pure Python on label lists: nothing here reads an image.
"""

from __future__ import annotations

import random
from collections import defaultdict, deque
from collections.abc import Sequence


def stratified_split(labels: Sequence[int], fractions: Sequence[float], seed: int) -> list[list[int]]:
    """Split example indices into ``len(fractions) + 1`` disjoint parts, per class.

    ``fractions`` are the shares of the first parts (e.g. ``[0.15, 0.15]`` for
    val and test); the rest goes to the last part. Each class keeps at least
    one example in the last part, and at least one in each other part when it
    has enough examples. The same labels and seed always give the same split.
    """
    parts: list[list[int]] = [[] for _ in range(len(fractions) + 1)]
    for cls, indices in sorted(_by_class(labels).items()):
        rng = random.Random(f"{seed}:{cls}")
        rng.shuffle(indices)
        start = 0
        for part, fraction in enumerate(fractions):
            remaining = len(indices) - start
            take = min(max(1, round(fraction * len(indices))), remaining - 1) if remaining > 1 else 0
            parts[part] += indices[start : start + take]
            start += take
        parts[-1] += indices[start:]
    return [sorted(p) for p in parts]


def subsample(labels: Sequence[int], total: int | None, per_class: int | None, seed: int) -> list[int]:
    """At most ``per_class`` examples of each class, then at most ``total`` in all,
    taken evenly across classes (VTAB-1k style). Returns sorted indices."""
    by_class = _by_class(labels)
    for cls, indices in by_class.items():
        random.Random(f"{seed}:{cls}").shuffle(indices)
        if per_class is not None:
            del indices[per_class:]
    if total is not None and sum(map(len, by_class.values())) > total:
        kept: list[int] = []
        queues = [deque(v) for _, v in sorted(by_class.items())]
        while len(kept) < total:  # round-robin over classes keeps the balance
            for queue in queues:
                if queue and len(kept) < total:
                    kept.append(queue.popleft())
        return sorted(kept)
    return sorted(i for v in by_class.values() for i in v)


def _by_class(labels: Sequence[int]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = defaultdict(list)
    for i, label in enumerate(labels):
        out[label].append(i)
    return out
