"""Drawing detections with OpenCV: one stable colour per class and readable labels."""

from __future__ import annotations

import cv2
import numpy as np

# A 20-colour palette (RGB) with good contrast; class i always gets PALETTE[i % 20].
PALETTE = (
    (255, 56, 56), (255, 157, 151), (255, 112, 31), (255, 178, 29), (207, 210, 49),
    (72, 249, 10), (146, 204, 23), (61, 219, 134), (26, 147, 52), (0, 212, 187),
    (44, 153, 168), (0, 194, 255), (52, 69, 147), (100, 115, 255), (0, 24, 236),
    (132, 56, 255), (82, 0, 133), (203, 56, 255), (255, 149, 200), (255, 55, 199),
)


def class_color(class_id: int, bgr: bool = False) -> tuple[int, int, int]:
    """The colour of a class, stable across images, runs and scripts."""
    r, g, b = PALETTE[int(class_id) % len(PALETTE)]
    return (b, g, r) if bgr else (r, g, b)


def draw_box(
    img: np.ndarray,
    xyxy: tuple[float, float, float, float] | np.ndarray,
    label: str = "",
    color: tuple[int, int, int] = (255, 56, 56),
    thickness: int | None = None,
) -> np.ndarray:
    """Draw one box (pixel x1, y1, x2, y2) with an optional filled label, in place; returns `img`.

    `color` is in the channel order of `img`. The thickness defaults to a size that stays
    visible on large photos and does not swamp small ones.
    """
    h, w = img.shape[:2]
    tl = thickness or max(round(0.002 * (h + w) / 2), 1)
    p1 = (int(xyxy[0]), int(xyxy[1]))
    p2 = (int(xyxy[2]), int(xyxy[3]))
    cv2.rectangle(img, p1, p2, color, thickness=tl, lineType=cv2.LINE_AA)
    if label:
        font_scale = max(tl / 3, 0.4)
        font_thickness = max(tl - 1, 1)
        (tw, th), baseline = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, font_scale, font_thickness)
        above = p1[1] - th - baseline - 3 >= 0
        y_text = p1[1] - baseline - 2 if above else p1[1] + th + 2
        top_left = (p1[0], p1[1] - th - baseline - 3) if above else (p1[0], p1[1])
        bottom_right = (p1[0] + tw + 2, p1[1]) if above else (p1[0] + tw + 2, p1[1] + th + baseline + 3)
        cv2.rectangle(img, top_left, bottom_right, color, -1, cv2.LINE_AA)
        text_color = (0, 0, 0) if sum(color) > 450 else (255, 255, 255)
        cv2.putText(img, label, (p1[0] + 1, y_text), cv2.FONT_HERSHEY_SIMPLEX, font_scale, text_color,
                    font_thickness, cv2.LINE_AA)
    return img
