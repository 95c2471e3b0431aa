"""The windows DensePose's decoder runs on (pure geometry; the decoder itself is checked against
the whole one in a real env: test_predict_env.py::test_decoder_windows_give_the_whole_decoders...)."""
from dpdeploy.inenv.decoder_window import windows


def covers(window, box, scale, margin):
    y0, y1, x0, x1 = window
    bx0, by0, bx1, by1 = (v * scale for v in box)
    return y0 <= max(0, by0 - margin) and y1 >= min(200, by1 + margin) and x0 <= max(0, bx0 - margin) \
        and x1 >= min(272, bx1 + margin)


def test_a_box_gets_its_margin_aligned_to_the_coarsest_level_and_clamped_to_the_map():
    [inside] = windows([(400.5, 300.25, 480.75, 420.5)], 0.25, 23, 8, 200, 272)
    assert inside == (48, 136, 72, 144) and covers(inside, (400.5, 300.25, 480.75, 420.5), 0.25, 23)
    assert all(v % 8 == 0 for v in inside)
    [edge] = windows([(900, 700, 1087, 799)], 0.25, 23, 8, 200, 272)
    assert edge == (152, 200, 200, 272)


def test_overlapping_windows_merge_until_none_overlap():
    boxes = [(10, 12, 90, 200), (60, 150, 160, 260), (900, 700, 1087, 799), (120, 40, 200, 90)]
    found = windows(boxes, 0.25, 23, 8, 200, 272)
    assert len(found) == 2
    for i, a in enumerate(found):
        for b in found[i + 1:]:
            assert not (a[0] < b[1] and b[0] < a[1] and a[2] < b[3] and b[2] < a[3]), (a, b)
    for box in boxes:
        assert any(covers(w, box, 0.25, 23) for w in found), box


def test_no_boxes_no_windows():
    assert windows([], 0.25, 23, 8, 200, 272) == []
