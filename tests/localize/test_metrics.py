from __future__ import annotations

import numpy as np
import pytest

from avssl.localize.metrics import auc, binarize, box_map, centre_prior, ciou, consensus_map, summarize


def test_ciou_by_hand():
    gt = np.zeros((4, 4))
    gt[:2, :2] = 1  # 4 pixels
    pred = np.zeros((4, 4))
    pred[:2, :3] = 1  # 6 pixels: 4 on the box, 2 off it
    assert ciou(pred, gt) == pytest.approx(4 / (4 + 2))
    assert ciou(gt, gt) == 1.0
    assert ciou(np.zeros((4, 4)), gt) == 0.0
    assert ciou(np.zeros((4, 4)), np.zeros((4, 4))) == 0.0  # nothing to find: scored 0, not NaN


def test_consensus_weights_of_several_annotators():
    # Three annotators on a 4x4 frame: two agree on the left half, one marks the top row.
    boxes = [[[0.0, 0.0, 0.5, 1.0]], [[0.0, 0.0, 0.5, 1.0]], [[0.0, 0.0, 1.0, 0.25]]]
    g = consensus_map(boxes, 4, 4)
    expected = np.array([[1, 1, 0.5, 0.5], [1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 0, 0]], dtype=np.float32)
    np.testing.assert_array_equal(g, expected)
    # Consensus-weighted cIoU: predicting the whole top row and left half.
    pred = (expected > 0).astype(float)
    assert ciou(pred, g) == pytest.approx(g.sum() / (g.sum() + 0))


def test_auc_edge_cases():
    assert auc([1.0, 1.0]) == pytest.approx(1.0)
    assert auc([0.0, 0.0]) == pytest.approx(0.025)  # only the threshold 0 counts every sample
    # Half the samples perfect, half zero: 0.5 everywhere except 1 at t=0.
    assert auc([1.0, 0.0]) == pytest.approx(0.5 + 0.0125)
    assert np.isnan(auc([]))
    s = summarize([0.5, 0.49, 1.0, 0.0])
    assert s["ciou_at_0.5"] == 0.5 and s["num_samples"] == 4


def test_binarizations():
    heat = np.array([[0.0, 0.1, 0.2, 0.3], [0.4, 0.5, 0.6, 0.7]])
    # median: strictly above the value at index N/2 of the sorted map (0.4): the top three
    np.testing.assert_array_equal(binarize(heat, "median"), [[0, 0, 0, 0], [0, 1, 1, 1]])
    np.testing.assert_array_equal(binarize(heat, "absolute"), [[0, 0, 0, 0], [0, 1, 1, 1]])
    gt = np.zeros((2, 4))
    gt[0, :2] = 1  # area 2: the two most salient pixels
    np.testing.assert_array_equal(binarize(heat, "adaptive", gt), [[0, 0, 0, 0], [0, 0, 1, 1]])
    with pytest.raises(ValueError, match="adaptive"):
        binarize(heat, "adaptive")
    with pytest.raises(ValueError, match="unknown"):
        binarize(heat, "otsu")


@pytest.mark.parametrize("mode", ["median", "absolute", "adaptive"])
def test_the_oracle_is_perfect_on_boxes_smaller_than_half_the_frame(mode):
    gt = box_map([[0.1, 0.2, 0.4, 0.6]], 90, 160)
    assert ciou(binarize(gt, mode, gt), gt) == 1.0


def test_boxes_follow_a_non_square_frame():
    g = box_map([[0.5, 0.0, 1.0, 0.5]], 2, 8)  # right half, top half of a 2x8 frame
    np.testing.assert_array_equal(g, [[0, 0, 0, 0, 1, 1, 1, 1], [0] * 8])
    g = box_map([[0.25, 0.25, 0.75, 0.75]], 120, 160)
    assert g.sum() == 60 * 80 and g[30:90, 40:120].all()


def test_centre_prior_peaks_in_the_middle_and_is_symmetric():
    c = centre_prior(90, 160)
    assert c.shape == (90, 160) and c.max() <= 1 and c.min() >= 0
    assert np.unravel_index(np.argmax(c), c.shape) in {(44, 79), (44, 80), (45, 79), (45, 80)}
    np.testing.assert_allclose(c, c[::-1, ::-1], atol=1e-6)
    # Under median binarization it selects a centred region of half the frame.
    assert binarize(c, "median").mean() == pytest.approx(0.5, abs=0.01)


def test_detection_scores_rank_confident_right_maps_above_confident_wrong_ones():
    from avssl.localize.metrics import detection_scores

    perfect = detection_scores([0.9, 0.8, 0.2, 0.1], [True, True, False, False])
    assert perfect["ap"] == pytest.approx(1.0) and perfect["max_f1"] == pytest.approx(1.0)
    # a map under silence more confident than the right one: precision 1/2 at the first right detection
    worse = detection_scores([0.9, 0.8, 0.2], [False, True, False])
    assert worse["ap"] == pytest.approx(0.5) and worse["max_f1"] == pytest.approx(2 / 3)
    # the same confidence for every map (a map that does not depend on the sound): one threshold, AP = share right
    flat = detection_scores([0.5] * 6, [True, False, False, True, False, False])
    assert flat["ap"] == pytest.approx(2 / 6)
    assert detection_scores([0.3], [False]) == {"ap": 0.0, "max_f1": 0.0, "positives": 0, "detections": 1}
