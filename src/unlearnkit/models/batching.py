"""Batches by length: rows of similar length together, and as many rows as a token budget allows.

Padding a short row to a long one's width costs the long row's compute; a fixed number of rows
per batch makes batches of short questions small and batches of long passages large. Both
training (`training.LengthGroupedFineTune`) and inference (`Subject.score`, `Subject.generate`)
group rows so that a batch's longest row is at most `max_ratio` times its shortest.
"""

from __future__ import annotations

import statistics

MAX_RATIO = 1.5  # a batch's longest row is at most this many times its shortest


def length_groups(lengths: list[int], max_ratio: float = MAX_RATIO) -> list[list[int]]:
    """Indices grouped, shortest first, so that each group's longest is ≤ max_ratio × its shortest."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    groups: list[list[int]] = []
    for i in order:
        if groups and lengths[i] <= max_ratio * lengths[groups[-1][0]]:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def length_batches(lengths: list[int], batch_size: int, max_ratio: float = MAX_RATIO, *, buckets: bool = True) -> list[list[int]]:
    """Inference batches, longest first: length groups cut so that a batch's padded tokens
    (rows × its longest) stay within `batch_size` rows of the median length. Rows of median
    length come `batch_size` to a batch, shorter ones more, longer ones fewer (at least one).
    `buckets=False`: `batch_size` rows to a batch, longest first (the rule before buckets)."""
    if not lengths:
        return []
    if not buckets:
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    budget = batch_size * statistics.median(lengths)
    batches: list[list[int]] = []
    for group in reversed(length_groups(lengths, max_ratio)):
        rows = sorted(group, key=lambda i: -lengths[i])
        width = lengths[rows[0]]
        size = max(1, int(budget // max(width, 1)))
        batches.extend(rows[start : start + size] for start in range(0, len(rows), size))
    return batches
