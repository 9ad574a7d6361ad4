"""The TCPD change-point scoring metric: F1 with a margin and segmentation cover against several
annotators, as defined by van den Burg and Williams, "An Evaluation of Change Point Detection
Algorithms" (2020), section 5. Reimplemented from the paper's definitions; pure.

A change point is a 0-based index: the first position of a new segment. Index 0 is a change
point of every segmentation (every annotator's and the prediction's), so "predicting no change"
still scores, and an annotator who marked nothing is matched by that index alone.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence

MARGIN = 5
"""How far (in positions) a prediction may lie from an annotated point and still find it."""


def matched(annotated: Iterable[int], predicted: Iterable[int], margin: int = MARGIN) -> set[int]:
    """The annotated points found by a prediction within ``margin``, each prediction finding at
    most one point: every annotated point (in ascending order) takes the nearest unused
    prediction in reach, the smaller on a tie.

    Args:
        annotated: the annotated change points.
        predicted: the predicted change points.
        margin: the largest distance at which a prediction finds a point.

    Returns:
        The annotated points that were found.
    """
    unused = set(predicted)
    found: set[int] = set()
    for point in sorted(set(annotated)):
        reach = [(abs(point - guess), guess) for guess in unused if abs(point - guess) <= margin]
        if reach:
            found.add(point)
            unused.remove(min(reach)[1])
    return found


def f1_score(
    annotations: Mapping[str, Iterable[int]], predictions: Iterable[int], margin: int = MARGIN
) -> float:
    """F1 of the predictions against every annotator at once.

    Precision is the share of predictions that find a point of the union of all annotations;
    recall is the mean over annotators of the share of their points found. Index 0 is added to
    every set.

    Args:
        annotations: annotator id to the change points they marked (at least one annotator).
        predictions: the predicted change points.
        margin: the largest distance at which a prediction finds a point.

    Returns:
        2PR / (P + R), or 0.0 when both are zero.

    Raises:
        ValueError: no annotator is given.
    """
    if not annotations:
        raise ValueError("f1_score needs at least one annotator")
    marked = [set(points) | {0} for points in annotations.values()]
    guesses = set(predictions) | {0}
    union = set().union(*marked)
    precision = len(matched(union, guesses, margin)) / len(guesses)
    recall = sum(len(matched(points, guesses, margin)) / len(points) for points in marked) / len(
        marked
    )
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def segments(change_points: Iterable[int], length: int) -> list[range]:
    """The partition of positions ``0 .. length-1`` that the change points cut it into.

    Args:
        change_points: first positions of new segments; those outside ``1 .. length-1`` cut
            nothing.
        length: the number of positions in the series.

    Returns:
        Consecutive, non-empty ranges covering every position once.
    """
    cuts = sorted({cp for cp in change_points if 0 < cp < length})
    bounds = [0, *cuts, length]
    return [range(start, end) for start, end in itertools.pairwise(bounds)]


def jaccard(first: range, second: range) -> float:
    """Overlap of two segments: |intersection| / |union| (0.0 when both are empty)."""
    inter = max(0, min(first.stop, second.stop) - max(first.start, second.start))
    union = len(first) + len(second) - inter
    return inter / union if union else 0.0


def cover_single(predicted: Sequence[range], truth: Sequence[range]) -> float:
    """How well the predicted segmentation covers one true segmentation: each true segment's
    best Jaccard overlap with a predicted segment, weighted by the true segment's length.

    Args:
        predicted: a partition of the positions.
        truth: a partition of the same positions.

    Returns:
        The weighted cover in [0, 1].

    Raises:
        ValueError: the two partitions cover different numbers of positions.
    """
    total = sum(len(segment) for segment in truth)
    if total != sum(len(segment) for segment in predicted):
        raise ValueError("the two segmentations cover different numbers of positions")
    if total == 0:
        return 0.0
    weighted = sum(len(r) * max(jaccard(r, p) for p in predicted) for r in truth)
    return weighted / total


def cover(
    annotations: Mapping[str, Iterable[int]], predictions: Iterable[int], length: int
) -> float:
    """Mean over annotators of how well the predicted segmentation covers theirs.

    Args:
        annotations: annotator id to the change points they marked (at least one annotator).
        predictions: the predicted change points.
        length: the number of positions in the series.

    Returns:
        The mean cover in [0, 1].

    Raises:
        ValueError: no annotator is given.
    """
    if not annotations:
        raise ValueError("cover needs at least one annotator")
    predicted = segments(predictions, length)
    covers = [cover_single(predicted, segments(points, length)) for points in annotations.values()]
    return sum(covers) / len(covers)
