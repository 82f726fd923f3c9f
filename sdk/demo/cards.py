"""Camera frames of a digit card held up to a webcam: the image half of the avdigits demo.

``render_card`` varies a frame as much as a real camera would; ``corrupt_frame`` imitates
the ways a camera fails, so that a fused model learns to trust the microphone then.
numpy and cv2 only: this is SDK code, which never imports torch.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np

__all__ = ["corrupt_frame", "render_card"]

# The glyph's height as a fraction of the frame height, before tilt and rotation: large
# enough that its strokes stay a few pixels wide once the frame is resized to 64x64.
_DIGIT_HEIGHT = (0.38, 0.56)
# The digit's centre stays this close to the frame centre (fraction of each side), so the
# central occluder of corrupt_frame covers it without being told where it is.
_MAX_OFFSET = 0.08
# The eight cv2.FONT_HERSHEY_* faces, SIMPLEX (0) to SCRIPT_COMPLEX (7).
_HERSHEY = range(cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_SCRIPT_COMPLEX + 1)
# OpenCV >= 5 draws the Hershey constants with built-in outline fonts (regular, bold,
# italic) and adds cv2.FontFace, whose variable weight and second face ("uni") add variety.
_FONT_FACE = functools.cache(cv2.FontFace) if hasattr(cv2, "FontFace") else None
# Distractor letters that are not read as digits (no O, I, l, S, Z, B, G, T, A, b, g, q).
_LETTERS = "CEFHKMNPRUVWXYckmnruvwx"
_SKIN = ((150, 175, 220), (120, 150, 205), (90, 120, 170), (60, 80, 125))  # BGR
_LUMA = np.array([0.114, 0.587, 0.299])  # BGR order


def render_card(
    digit: int, rng: np.random.Generator, size: tuple[int, int] = (96, 96)
) -> np.ndarray:
    """Renders one camera frame showing a paper card with a digit on it.

    Args:
        digit: The digit to show, 0 to 9.
        rng: The source of all randomness; the same state gives the same frame.
        size: Frame (height, width) in pixels, each at least 48.

    Returns:
        A (height, width, 3) uint8 BGR frame.

    Raises:
        TypeError: digit is not an int, or rng not a numpy Generator.
        ValueError: digit is outside 0-9, or size is not two ints >= 48.
    """
    if not isinstance(digit, (int, np.integer)) or isinstance(digit, bool):
        raise TypeError(f"digit must be an int 0-9, got {type(digit).__name__} {digit!r}")
    if not 0 <= digit <= 9:
        raise ValueError(f"digit must be 0-9, got {digit}")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    if (
        not isinstance(size, (tuple, list))
        or len(size) != 2
        or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in size)
        or min(size) < 48  # smaller, blur and JPEG leave too little of the digit
    ):
        raise ValueError(f"size must be (height, width), two ints >= 48, got {size!r}")
    h, w = int(size[0]), int(size[1])
    s = min(h, w)
    frame = _background(rng, h, w, s)
    px = rng.uniform(*_DIGIT_HEIGHT) * h
    card, (ix, iy, iw, ih) = _card(digit, rng, px)

    # Pose: scale the glyph to px high, tilt (a keystone: one side of the card nearer the
    # camera), rotate, place near the centre; four corner correspondences give the warp.
    ch, cw = card.shape[:2]
    src = np.array([[0, 0], [cw, 0], [cw, ch], [0, ch]], np.float32)
    tilt = 1 + np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) @ rng.uniform(-0.12, 0.12, 2)
    a = np.deg2rad(rng.uniform(-25, 25))
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    scale = min(px / ih, 0.7 * w / iw)  # a portrait frame may be too narrow for px
    dst = ((src - (ix + iw / 2, iy + ih / 2)) * scale * tilt[:, None]) @ rot.T
    dst += np.array([w, h]) * (0.5 + rng.uniform(-_MAX_OFFSET, _MAX_OFFSET, 2))
    dst = dst.astype(np.float32)
    ink = np.array([[ix, iy], [ix + iw, iy], [ix + iw, iy + ih], [ix, iy + ih]], np.float32)
    box = cv2.perspectiveTransform(ink[None], cv2.getPerspectiveTransform(src, dst))[0]
    # Keep the whole digit in view by moving the card, never by shrinking the digit.
    lo, hi = box.min(0), box.max(0)
    margin = 0.03 * s
    shift = np.maximum(margin - lo, 0) + np.minimum(np.array([w, h]) - margin - hi, 0)
    dst, lo, hi = dst + shift, lo + shift, hi + shift

    if rng.random() < 0.4:  # the card's shadow on the scene behind it
        shade = frame.copy()
        off = rng.uniform(1, 4, 2) * s / 96 * rng.choice([-1, 1], 2)
        cv2.fillConvexPoly(shade, (dst + off).astype(np.int32), (0, 0, 0), cv2.LINE_AA)
        alpha = rng.uniform(0.2, 0.45)
        cv2.addWeighted(frame, 1 - alpha, shade, alpha, 0, dst=frame)
    m = cv2.getPerspectiveTransform(src, dst.astype(np.float32))
    cv2.warpPerspective(card, m, (w, h), dst=frame, borderMode=cv2.BORDER_TRANSPARENT)
    if rng.random() < 0.2:
        _finger(frame, rng, lo, hi, s)
    return _camera(frame, rng, s)


def corrupt_frame(frame: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Makes a frame unreliable the way a real camera fails, so that no digit can be read.

    One failure is drawn at random: the lens covered (near black, faint noise and tint), a
    hand near the lens over 60-85 % of the frame, centred where render_card keeps the digit,
    extreme over-exposure, extreme defocus, or the card out of view (the scene only).

    Args:
        frame: A (height, width, 3) uint8 frame; it is not modified.
        rng: The source of all randomness; the same state gives the same result.

    Returns:
        A new frame of the same shape and dtype.

    Raises:
        TypeError: frame is not a uint8 numpy array, or rng not a numpy Generator.
        ValueError: frame is not (height, width, 3) with both sides at least 48.
    """
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8:
        got = getattr(frame, "dtype", type(frame).__name__)
        raise TypeError(f"frame must be a uint8 numpy array, got {got}")
    if frame.ndim != 3 or frame.shape[2] != 3 or min(frame.shape[:2]) < 48:
        raise ValueError(f"frame must be (height, width, 3) with sides >= 48, got {frame.shape}")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    h, w = frame.shape[:2]
    s = min(h, w)
    kind = rng.integers(5)
    if kind == 0:  # lens covered: a little light leaks in from one side, tinted by the skin
        level = rng.uniform(2, 12) * (1 + 0.5 * _ramp(rng, h, w))
        out, noise = level[..., None] * rng.uniform(0.5, 1.5, 3).astype(np.float32), (0.8, 2.5)
    elif kind == 1:  # a hand close to the lens: large, out of focus, unevenly lit
        mask = np.zeros((h, w), np.uint8)
        centre = np.array([w, h]) * (0.5 + rng.uniform(-0.03, 0.03, 2))
        axes = (np.array([w, h]) * rng.uniform(0.45, 0.5)).astype(int).tolist()
        cv2.ellipse(mask, centre.astype(int).tolist(), axes, 0, 0, 360, 255, -1, cv2.LINE_AA)
        if rng.random() < 0.6:  # the wrist, leaving the frame through one side
            b = rng.uniform(0, 2 * np.pi)
            end = centre + 2 * s * np.array([np.cos(b), np.sin(b)])
            thick = int(rng.uniform(0.35, 0.55) * s)
            cv2.line(mask, centre.astype(int).tolist(), end.astype(int).tolist(), 255, thick)
        alpha = cv2.GaussianBlur(mask, (0, 0), rng.uniform(1, 3) * s / 96)[..., None] / 255
        base = _SKIN[rng.integers(len(_SKIN))] if rng.random() < 0.7 else rng.uniform(10, 90, 3)
        hand = np.asarray(base, np.float32) * rng.uniform(0.5, 1.1)
        hand = hand * (1 + 0.3 * _ramp(rng, h, w))[..., None]
        out, noise = frame * (1 - alpha) + hand * alpha, (1, 4)
    elif kind == 2:  # blown out: bloom spreads the light, then the sensor saturates
        out = cv2.GaussianBlur(frame, (0, 0), rng.uniform(3, 5) * s / 96).astype(np.float32)
        out = (255 - (255 - out) * rng.uniform(0.0, 0.02)) * rng.uniform(0.94, 1.0, 3)
        noise = (0.5, 2)
    elif kind == 3:  # defocus far wider than any stroke; blurring an 8x smaller copy looks
        # the same and is ~100x cheaper than a sigma-20 kernel at full size
        small = cv2.resize(frame, (max(w // 8, 2), max(h // 8, 2)), interpolation=cv2.INTER_AREA)
        small = cv2.GaussianBlur(small, (0, 0), rng.uniform(0.16, 0.24) * s / 8)
        out = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC).astype(np.float32)
        noise = (1, 4)
    else:  # the card moved out of view: the camera sees only the scene
        return _camera(_background(rng, h, w, s), rng, s)
    out = out + _noise(rng, (h, w, 3), rng.uniform(*noise))
    return np.clip(out, 0, 255).astype(np.uint8)


def _card(digit: int, rng: np.random.Generator, px: float) -> tuple[np.ndarray, tuple]:
    """Returns a card with the digit printed on it, and the digit's ink box (x, y, w, h).

    The glyph is drawn about px high, near its size in the frame, so the warp that poses
    it resamples little; its true extent is measured, as it varies with font and digit.
    """
    pad = int(px)
    mask = np.zeros((3 * pad, 3 * pad), np.uint8)
    if _FONT_FACE and rng.random() < 0.5:
        face = _FONT_FACE(("sans", "italic", "uni")[rng.integers(3)])
        weight = int(rng.integers(300, 850))  # heavier fills the counters of 8 and 9
        cv2.putText(mask, str(digit), (pad, 2 * pad), 255, face, int(px / 0.7), weight)
    else:
        font = _HERSHEY[rng.integers(len(_HERSHEY))]
        font |= cv2.FONT_ITALIC if rng.random() < 0.25 else 0
        thick = int(rng.integers(1, max(2, round(px * 0.1)) + 1))
        scale = cv2.getFontScaleFromHeight(font, pad, thick)
        cv2.putText(mask, str(digit), (pad, 2 * pad), font, scale, 255, thick, cv2.LINE_AA)
    x, y, iw, ih = cv2.boundingRect(mask)
    left, right = (rng.uniform(0.15, 0.5, 2) * ih).astype(int)
    top, bottom = (rng.uniform(0.10, 0.30, 2) * ih).astype(int)
    alpha = np.zeros((top + ih + bottom, left + iw + right, 1), np.float32)
    alpha[top : top + ih, left : left + iw, 0] = mask[y : y + ih, x : x + iw] / np.float32(255)

    if rng.random() < 0.15:  # a dark card with light ink
        paper, ink = rng.uniform(10, 80, 3), rng.uniform(190, 255, 3)
    else:  # white or pastel paper, dark and sometimes coloured ink
        paper, ink = rng.uniform(185, 255, 3), rng.uniform(0, 80, 3)
        if rng.random() < 0.3:
            paper[rng.integers(3)] -= rng.uniform(30, 70)
        if rng.random() < 0.4:
            ink[rng.integers(3)] += rng.uniform(40, 100)
        # Darken the ink until it is at least 110 grey levels below the paper.
        ink *= min(1.0, (_LUMA @ paper - 110) / max(_LUMA @ ink, 1.0))
    card = (paper + alpha * (ink - paper)).astype(np.uint8)
    if rng.random() < 0.3:  # a printed frame line near the card's edge
        i = int(rng.uniform(0.04, 0.1) * ih) + 1
        corner = (card.shape[1] - 1 - i, card.shape[0] - 1 - i)
        cv2.rectangle(card, (i, i), corner, ink.tolist(), 1)
    return card, (left, top, iw, ih)


def _noise(rng: np.random.Generator, shape: tuple, sigma: float) -> np.ndarray:
    """Zero-mean float32 noise with standard deviation sigma.

    The sum of two uniform bytes is close enough to Gaussian for sensor noise and ~4x
    cheaper to draw: rng.standard_normal alone took ~0.5 ms for one 96x96x3 frame.
    """
    a, b = rng.integers(0, 256, (2, *shape), np.uint8)
    return (cv2.add(a, b, dtype=cv2.CV_32F) - 255) * np.float32(sigma / 104.5)


@functools.lru_cache(maxsize=8)
def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    # Cached: building these costs about as much as using them, and every frame needs them.
    x = np.linspace(-1, 1, w, dtype=np.float32)[None]
    return x, np.linspace(-1, 1, h, dtype=np.float32)[:, None]


def _ramp(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A linear ramp from -1 to 1 across the frame in a random direction, float32 (h, w)."""
    a = rng.uniform(0, 2 * np.pi)
    c, s = np.cos(a), np.sin(a)
    x, y = _grid(h, w)
    return x * np.float32(c / (abs(c) + abs(s))) + y * np.float32(s / (abs(c) + abs(s)))


def _background(rng: np.random.Generator, h: int, w: int, s: int) -> np.ndarray:
    """A cluttered scene behind the card: a smooth base, some grain, shapes and letters."""
    gradient = rng.random() < 0.5
    colours = rng.uniform(20, 235, (2, 3) if gradient else (*rng.integers(2, 7, 2), 3))
    grey = colours.mean(axis=-1, keepdims=True)  # real rooms are far less saturated
    colours = (grey + (colours - grey) * rng.uniform(0.2, 0.7)).astype(np.float32)
    if gradient:  # a wall or desk, lit unevenly
        img = colours[0] + (_ramp(rng, h, w)[..., None] + 1) / 2 * (colours[1] - colours[0])
    else:  # an out-of-focus room: a few colour patches, smoothly interpolated
        img = cv2.resize(colours, (w, h), interpolation=cv2.INTER_CUBIC)
    if rng.random() < 0.5:  # fine texture: fabric, wood, paper
        grain = _noise(rng, (h, w), rng.uniform(6, 20))
        img += cv2.GaussianBlur(grain, (0, 0), rng.uniform(0.5, 1.5))[..., None]
    img = np.clip(img, 0, 255).astype(np.uint8)
    for _ in range(rng.integers(2, 9)):
        colour = rng.uniform(0, 255, 3).tolist()
        p1, p2 = (rng.uniform(0, 1, (2, 2)) * (w, h)).astype(int).tolist()
        thick = int(rng.integers(1, 4))
        kind = rng.integers(4)
        if kind == 0:
            cv2.line(img, p1, p2, colour, thick, cv2.LINE_AA)
        elif kind == 1:
            cv2.rectangle(img, p1, p2, colour, -1 if rng.random() < 0.5 else thick)
        elif kind == 2:  # mostly filled, and rings small: a large ring would read as a 0
            filled = rng.random() < 0.7
            radius = int(rng.uniform(0.03, 0.25 if filled else 0.12) * s)
            cv2.circle(img, p1, radius, colour, -1 if filled else thick, cv2.LINE_AA)
        else:  # small, so that it never competes with the card's digit
            font = _HERSHEY[rng.integers(len(_HERSHEY))]
            scale = cv2.getFontScaleFromHeight(font, int(rng.uniform(0.08, 0.15) * s), 1)
            letter = _LETTERS[rng.integers(len(_LETTERS))]
            cv2.putText(img, letter, p1, font, scale, colour, 1, cv2.LINE_AA)
    return img


def _finger(
    frame: np.ndarray, rng: np.random.Generator, lo: np.ndarray, hi: np.ndarray, s: int
) -> None:
    """Draws in place a finger, holding the card, that stops short of the digit box lo-hi."""
    h, w = frame.shape[:2]
    r, gap = rng.uniform(0.06, 0.09) * s, 0.03 * s + 1  # r: half the finger's width
    room = (lo[1], h - hi[1], lo[0], w - hi[0])  # above, below, left of, right of the digit
    sides = [i for i in range(4) if room[i] > r + gap]
    if not sides:
        return
    side = sides[rng.integers(len(sides))]
    axis, sign = (1 if side < 2 else 0), (1 if side % 2 == 0 else -1)
    tip = rng.uniform(lo, hi)  # level with the digit, then moved just outside its box
    tip[axis] = lo[axis] - gap if sign > 0 else hi[axis] + gap
    a = np.deg2rad(rng.uniform(-20, 20))
    inward = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]) @ np.eye(2)[axis] * sign
    # cv2.line draws round caps: end the line one radius short of the tip, start it
    # off-frame. Tilted, the cap reaches r * (1 - cos 20°) < 0.006 s past the tip, plus
    # a pixel of edge: less than the gap, so the finger never touches the digit's box.
    p1, p2 = (tip - inward * r).astype(int).tolist(), (tip - inward * 2 * s).astype(int).tolist()
    skin = np.asarray(_SKIN[rng.integers(len(_SKIN))]) + rng.uniform(-15, 15, 3)
    cv2.line(frame, p1, p2, (skin * 0.75).tolist(), int(2 * r) + 2, cv2.LINE_AA)  # its edge
    cv2.line(frame, p1, p2, skin.tolist(), int(2 * r), cv2.LINE_AA)


def _camera(img: np.ndarray, rng: np.random.Generator, s: int) -> np.ndarray:
    """What the camera adds: exposure, uneven light, a colour cast, blur, noise, compression."""
    h, w = img.shape[:2]
    # Contrast, brightness, saturation and an off white balance are all linear in the
    # colour, so one 3x4 colour matrix applies them in a single pass.
    gain, sat = rng.uniform(0.7, 1.15), rng.uniform(0.6, 1.1)
    cast = (rng.uniform(0.82, 1.18, 3) if rng.random() < 0.35 else np.ones(3))[:, None]
    mix = gain * (sat * np.eye(3) + (1 - sat) / 3)
    offset = 128 * (1 - gain) + rng.uniform(-35, 30)
    f = cv2.transform(img.astype(np.float32), np.hstack([cast * mix, cast * offset]))
    f *= (1 + rng.uniform(0, 0.35) * _ramp(rng, h, w))[..., None]  # uneven light
    u = rng.random()
    if u < 0.55:  # slightly out of focus
        f = cv2.GaussianBlur(f, (0, 0), rng.uniform(0.3, 0.9) * s / 96)
    elif u < 0.8:  # the hand moved during the exposure: a short line kernel at an angle
        n = max(3, int(rng.integers(3, 6) * s / 96)) | 1
        kernel = np.zeros((n, n), np.float32)
        kernel[n // 2] = 1
        turn = cv2.getRotationMatrix2D((n // 2, n // 2), rng.uniform(0, 180), 1)
        kernel = cv2.warpAffine(kernel, turn, (n, n))
        f = cv2.filter2D(f, -1, kernel / kernel.sum())
    f += _noise(rng, f.shape, rng.uniform(1.5, 7))  # sensor noise
    out = np.clip(f, 0, 255).astype(np.uint8)
    if rng.random() < 0.3:  # a webcam's MJPEG stream
        _, jpeg = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(30, 80))])
        out = cv2.imdecode(jpeg, cv2.IMREAD_COLOR)
    return out
