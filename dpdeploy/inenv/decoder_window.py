"""DensePose's decoder run only on windows around the detected boxes: same values inside them.

In inference the decoder (panoptic-FPN style: 3x3 convolutions and 2x bilinear upsamplings from
each FPN level to the finest, summed, then a 1x1 predictor) feeds only the DensePose pooler,
which samples it inside each detected box. Its convolutions reach a fixed number of pixels (21
at the finest level for p5 of R50-FPN), so the decoder run on a window of a box plus that reach
(aligned to the coarsest level) gives the same values inside the box as the whole map; the rest of
the map stays zero, as nothing reads it. A decoder of any other shape (a normalisation, another
layer) is left as it is.
"""
from __future__ import annotations

import math
import threading
from typing import Any, Optional

Window = tuple[int, int, int, int]   # y0, y1, x0, x1 at the finest level, end-exclusive

# Share of the map above which the windows are not worth it: the whole map is decoded at once.
WHOLE_MAP_SHARE = 0.7


def reach(decoder) -> Optional[int]:
    """Pixels at the finest level that one output pixel of ``decoder`` depends on in each
    direction (None: a decoder this module does not know)."""
    from detectron2.layers import Conv2d
    from torch import nn

    def conv_reach(conv) -> Optional[int]:
        simple = (isinstance(conv, Conv2d) and conv.norm is None and conv.stride == (1, 1)
                  and conv.dilation == (1, 1) and conv.groups == 1 and conv.kernel_size[0] == conv.kernel_size[1]
                  and conv.padding == (conv.kernel_size[0] // 2,) * 2)
        return conv.kernel_size[0] // 2 if simple else None

    widest = 0
    for head in getattr(decoder, "scale_heads", None) or []:
        band = 0
        for op in head:
            if isinstance(op, nn.Upsample):
                if op.mode != "bilinear" or op.align_corners or op.scale_factor not in (2, 2.0):
                    return None
                band = 2 * band + 1   # a corrupt pixel spreads to its two neighbours' interpolations
            elif (step := conv_reach(op)) is not None:
                band += step
            else:
                return None
        widest = max(widest, band)
    predictor = getattr(decoder, "predictor", None)
    if conv_reach(predictor) != 0:
        return None
    return widest


def windows(boxes: list[tuple[float, float, float, float]], scale: float, margin: int, align: int,
            height: int, width: int) -> list[Window]:
    """Non-overlapping windows (finest-level pixels, multiples of ``align``) covering each box
    (x0, y0, x1, y1 in image pixels, ``scale`` to the finest level) plus ``margin``."""
    def span(lo: float, hi: float, size: int) -> tuple[int, int]:
        start = max(0, (math.floor(lo * scale) - margin) // align * align)
        return start, min(size, -(-(math.ceil(hi * scale) + margin) // align) * align)

    found = [(*span(y0, y1, height), *span(x0, x1, width)) for x0, y0, x1, y1 in boxes]
    i = 0
    while i < len(found):   # a window overlapping a later one becomes their bounding window; recheck all
        j = next((j for j in range(i + 1, len(found)) if _overlap(found[i], found[j])), None)
        if j is None:
            i += 1
        else:
            a, b = found[i], found.pop(j)
            found[i], i = (min(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), max(a[3], b[3])), 0
    return found


def _overlap(a: Window, b: Window) -> bool:
    return a[0] < b[1] and b[0] < a[1] and a[2] < b[3] and b[2] < a[3]


def install(heads) -> bool:
    """Make ``heads`` (DensePose's ROI heads) decode only around the boxes it is given in
    inference; False when the heads have no decoder this fits (they are left as they are)."""
    decoder = getattr(heads, "decoder", None) if getattr(heads, "use_decoder", False) else None
    band = reach(decoder) if decoder is not None else None
    pooler = getattr(heads, "densepose_pooler", None)
    if band is None or pooler is None or len(pooler.level_poolers) != 1:
        return False
    scale = float(pooler.level_poolers[0].spatial_scale)
    margin = band + 2   # + the pooler's bilinear neighbour, + one for rounding
    whole, original = decoder.forward, heads._forward_densepose
    current = threading.local()   # the boxes of the forward pass running on this thread

    def decode(features: list[Any]):
        boxes = getattr(current, "boxes", None)
        finest = features[0]
        height, width = finest.shape[-2:]
        align = max(height // f.shape[-2] for f in features)
        if boxes is None or any(f.shape[-2] * (height // f.shape[-2]) != height
                                or f.shape[-1] * (width // f.shape[-1]) != width for f in features):
            return whole(features)
        per_image = [windows(b.tolist(), scale, margin, align, height, width) for b in boxes]
        area = sum((y1 - y0) * (x1 - x0) for found in per_image for y0, y1, x0, x1 in found)
        if area > WHOLE_MAP_SHARE * height * width * len(per_image):
            return whole(features)
        out = finest.new_zeros((finest.shape[0], decoder.predictor.out_channels, height, width))
        for i, found in enumerate(per_image):
            for y0, y1, x0, x1 in found:
                crops = [f[i:i + 1, :, y0 * f.shape[-2] // height:y1 * f.shape[-2] // height,
                           x0 * f.shape[-1] // width:x1 * f.shape[-1] // width] for f in features]
                out[i:i + 1, :, y0:y1, x0:x1] = whole(crops)
        return out

    def forward_densepose(features, instances):
        if heads.training:
            return original(features, instances)
        current.boxes = [x.pred_boxes.tensor for x in instances]
        try:
            return original(features, instances)
        finally:
            current.boxes = None

    decoder.forward = decode
    heads._forward_densepose = forward_densepose
    return True
