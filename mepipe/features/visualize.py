"""Pictures of arrays: colour-coded flow fields and labelled montages. Arrays in, arrays out."""

from __future__ import annotations

import cv2
import numpy as np


def flow_to_color(flow: np.ndarray, max_magnitude: float | None = None) -> np.ndarray:
    """Colour-code a flow field the Middlebury way: hue is direction, saturation is speed.

    Parameters
    ----------
    flow : (2, H, W) displacement, x then y, in pixels.
    max_magnitude : speed shown fully saturated (pixels); defaults to the field's largest.

    Returns
    -------
    (H, W, 3) uint8 RGB: white where nothing moves; rightward red, downward green-yellow,
    leftward cyan, upward blue-violet (the hue wheel of :func:`color_wheel`).
    """
    if flow.ndim != 3 or flow.shape[0] != 2:
        raise ValueError(f"expected a (2, H, W) flow field, got shape {flow.shape}")
    u, v = flow[0].astype(np.float32), flow[1].astype(np.float32)
    magnitude = np.hypot(u, v)
    if max_magnitude is None:
        max_magnitude = float(magnitude.max())
    hue = (np.degrees(np.arctan2(v, u)) % 360) / 2  # OpenCV hue range is 0..180
    saturation = np.clip(magnitude / max(max_magnitude, 1e-9), 0, 1) * 255
    hsv = np.stack([hue, saturation, np.full_like(hue, 255)], axis=-1).astype(np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def color_wheel(size: int = 64) -> np.ndarray:
    """(size, size, 3) uint8 RGB legend of :func:`flow_to_color`: a disc of unit-speed flows."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    centre = (size - 1) / 2
    flow = np.stack([xs - centre, ys - centre]) / centre
    wheel = flow_to_color(flow, max_magnitude=1.0)
    wheel[np.hypot(*flow) > 1] = 255
    return wheel


def draw_arrows(image: np.ndarray, flow: np.ndarray, step: int, scale: float, color=(0, 0, 0)) -> np.ndarray:
    """Copy of an RGB image with one arrow every ``step`` pixels, ``scale`` times the flow's length."""
    out = image.copy()
    height, width = flow.shape[1:]
    for y in range(step // 2, height, step):
        for x in range(step // 2, width, step):
            dx, dy = flow[0, y, x] * scale, flow[1, y, x] * scale
            if dx * dx + dy * dy < 1.0:
                continue
            cv2.arrowedLine(out, (x, y), (int(round(x + dx)), int(round(y + dy))), color, 1, cv2.LINE_AA, tipLength=0.3)
    return out


def label(image: np.ndarray, text: str, height: int = 22) -> np.ndarray:
    """The image with a white caption band of ``height`` pixels on top."""
    band = np.full((height, image.shape[1], 3), 255, np.uint8)
    cv2.putText(band, text, (4, height - 7), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return np.vstack([band, image])
