"""The TCPD metric (van den Burg and Williams, 2020): the published doctest examples of
TCPDBench's ``analysis/scripts/metrics.py`` as golden values, reimplemented from the paper."""

from __future__ import annotations

import pytest

from driftowner.detect.tcpd_metric import cover, cover_single, f1_score, jaccard, matched, segments

MATCHED_CASES = [
    ({1, 10, 20, 23}, {3, 8, 20}, {1, 10, 20}),
    ({1, 10, 20, 23}, {1, 3, 8, 20}, {1, 10, 20}),
    ({1, 10, 20, 23}, {1, 3, 5, 8, 20}, {1, 10, 20}),
    (set(), {1, 2, 3}, set()),
    ({1, 2, 3}, set(), set()),
]


@pytest.mark.parametrize(("annotated", "predicted", "found"), MATCHED_CASES)
def test_matched_counts_each_prediction_once(
    annotated: set[int], predicted: set[int], found: set[int]
) -> None:
    """A prediction finds at most one annotated point within the margin of 5 (the published
    ``true_positives`` examples): 23 is not found by the 20 that already found 20."""
    assert matched(annotated, predicted) == found


F1_CASES = [
    ({"1": [10, 20], "2": [11, 20], "3": [10], "4": [0, 5]}, [10, 20], 1.0),
    ({"1": [], "2": [10], "3": [50]}, [10], 0.9090909090909091),
    ({"1": [], "2": [10], "3": [50]}, [], 0.8),
]


@pytest.mark.parametrize(("annotations", "predictions", "expected"), F1_CASES)
def test_f1_matches_the_published_examples(
    annotations: dict[str, list[int]], predictions: list[int], expected: float
) -> None:
    """F1 with margin 5 and index 0 added everywhere equals the published ``f_measure``
    examples, including "no change predicted" scoring 0.8."""
    assert f1_score(annotations, predictions) == pytest.approx(expected, rel=1e-12)


def test_f1_is_zero_only_when_nothing_matches() -> None:
    """Far-off predictions lower precision but index 0 always matches, so F1 stays positive;
    and a wider margin turns a near miss into a hit."""
    assert 0 < f1_score({"a": [100]}, [50, 60, 70]) < 0.5
    assert f1_score({"a": [100]}, [107], margin=5) < f1_score({"a": [100]}, [107], margin=7)


JACCARD_CASES = [
    (range(1, 4), range(0), 0.0),
    (range(1, 4), range(2, 6), 2 / 5),
    (range(0), range(1, 4), 0.0),
    (range(1, 4), range(1, 4), 1.0),
]


@pytest.mark.parametrize(("first", "second", "expected"), JACCARD_CASES)
def test_jaccard_of_segments(first: range, second: range, expected: float) -> None:
    """The overlap of two segments is |A and B| / |A or B|, zero against an empty one."""
    assert jaccard(first, second) == pytest.approx(expected)


SEGMENT_CASES = [
    ([], 5, [range(0, 5)]),
    ([3, 5], 8, [range(0, 3), range(3, 5), range(5, 8)]),
    ([1, 2, 7], 8, [range(0, 1), range(1, 2), range(2, 7), range(7, 8)]),
    ([0, 4], 6, [range(0, 4), range(4, 6)]),
]


@pytest.mark.parametrize(("cps", "length", "expected"), SEGMENT_CASES)
def test_segments_match_the_published_partitions(
    cps: list[int], length: int, expected: list[range]
) -> None:
    """Change points cut ``0 .. length-1`` as the published ``partition_from_cps`` examples
    do; a change point at 0 cuts nothing."""
    assert segments(cps, length) == expected


COVER_SINGLE_CASES = [
    ([range(1, 4), range(4, 6), range(6, 7)], [range(1, 4), range(4, 7)], 0.8333333333333334),
    ([range(1, 5), range(5, 7)], [range(1, 7)], 0.6666666666666666),
    ([range(1, 3), range(3, 5), range(5, 7)], [range(1, 4), range(4, 7)], 0.6666666666666666),
    ([range(1, 7)], [range(1, 2), range(2, 3), range(3, 4), range(4, 7)], 0.3333333333333333),
]


@pytest.mark.parametrize(("predicted", "truth", "expected"), COVER_SINGLE_CASES)
def test_cover_single_matches_the_published_examples(
    predicted: list[range], truth: list[range], expected: float
) -> None:
    """One segmentation's cover of another equals the published ``cover_single`` examples."""
    assert cover_single(predicted, truth) == pytest.approx(expected, rel=1e-12)


COVER_CASES = [
    ({"1": [10, 20], "2": [10], "3": [0, 5]}, [10, 20], 45, 0.7962962962962963),
    ({"1": [], "2": [10], "3": [40]}, [10], 45, 0.7954144620811286),
    ({"1": [], "2": [10], "3": [40]}, [], 45, 0.8189300411522634),
]


@pytest.mark.parametrize(("annotations", "predictions", "length", "expected"), COVER_CASES)
def test_cover_matches_the_published_examples(
    annotations: dict[str, list[int]], predictions: list[int], length: int, expected: float
) -> None:
    """The mean cover over annotators equals the published ``covering`` examples."""
    assert cover(annotations, predictions, length) == pytest.approx(expected, rel=1e-12)


def test_bad_input_is_refused_with_a_reason() -> None:
    """No annotator, or segmentations of different lengths, are errors that say so."""
    with pytest.raises(ValueError, match="at least one annotator"):
        f1_score({}, [1])
    with pytest.raises(ValueError, match="at least one annotator"):
        cover({}, [1], 10)
    with pytest.raises(ValueError, match="different numbers of positions"):
        cover_single([range(0, 3)], [range(0, 4)])
