from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge_runtime.engines.spec import InputSpec
from edge_runtime.engines.preprocess import FrameError, Preprocessor, crop_box


def reference(frame_bgr, spec: InputSpec) -> np.ndarray:
    """The slow, obvious pipeline: full resize of the shorter side, centre crop, RGB, /255, mean/std."""
    h, w = frame_bgr.shape[:2]
    out_h, out_w = spec.size
    if spec.resize:
        scale = spec.resize / min(h, w)
        rh, rw = round(h * scale), round(w * scale)
        img = cv2.resize(frame_bgr, (rw, rh), interpolation=cv2.INTER_AREA)
        y0, x0 = (rh - out_h) // 2, (rw - out_w) // 2
        img = img[y0:y0 + out_h, x0:x0 + out_w]
    else:
        img = cv2.resize(frame_bgr, (out_w, out_h), interpolation=cv2.INTER_AREA)
    if spec.color == "rgb":
        img = img[:, :, ::-1]
    if spec.dtype == "float32":
        img = (img.astype(np.float32) / 255.0 - np.array(spec.mean, np.float32)) / np.array(spec.std, np.float32)
    out = img.transpose(2, 0, 1) if spec.layout == "nchw" else img
    return out[None]


def smooth_frame(h=480, w=640):
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    frame = np.stack([x / w * 255, y / h * 255, (x + y) / (w + h) * 255], axis=-1)
    return frame.astype(np.uint8)


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
@pytest.mark.parametrize("dtype", ["float32", "uint8"])
@pytest.mark.parametrize("color", ["rgb", "bgr"])
@pytest.mark.parametrize("resize", [None, 256])
def test_matches_reference_pipeline(layout, dtype, color, resize):
    spec = InputSpec(size=(224, 224), resize=resize, color=color, layout=layout, dtype=dtype,
                     interpolation="area")
    frame = smooth_frame()
    got = Preprocessor(spec)(frame)
    want = reference(frame, spec)
    assert got.shape == want.shape and got.dtype == want.dtype
    # Cropping before resizing differs from resizing before cropping by sub-pixel interpolation only.
    tol = 0.05 if dtype == "float32" else 3
    assert np.abs(got.astype(np.float32) - want.astype(np.float32)).mean() < tol / 5
    assert np.abs(got.astype(np.float32) - want.astype(np.float32)).max() < tol * 4


def test_colour_order_of_a_pure_red_frame():
    red_bgr = np.zeros((100, 100, 3), np.uint8)
    red_bgr[:, :, 2] = 255
    rgb = Preprocessor(InputSpec(size=(8, 8), mean=(0, 0, 0), std=(1, 1, 1)))(red_bgr)
    assert rgb[0, 0].min() == 1.0 and rgb[0, 2].max() == 0.0      # channel 0 is R
    bgr = Preprocessor(InputSpec(size=(8, 8), color="bgr", mean=(0, 0, 0), std=(1, 1, 1)))(red_bgr)
    assert bgr[0, 2].min() == 1.0 and bgr[0, 0].max() == 0.0


def test_crop_box_is_centred_and_keeps_aspect():
    spec = InputSpec(size=(224, 224), resize=256)
    y0, y1, x0, x1 = crop_box(480, 640, spec)
    assert (y1 - y0, x1 - x0) == (420, 420)            # 224/256 of the shorter side
    assert y0 == 30 and x0 == 110
    assert crop_box(480, 640, InputSpec(size=(224, 224))) == (0, 480, 0, 640)


def test_grey_and_bgra_frames_are_accepted():
    pre = Preprocessor(InputSpec(size=(16, 16)))
    grey = np.full((40, 50), 128, np.uint8)
    out = pre(grey)
    assert np.allclose(out[0, 0] * 0.229 + 0.485, out[0, 1] * 0.224 + 0.456, atol=1e-3)   # grey stays grey
    bgra = np.zeros((40, 50, 4), np.uint8)
    bgra[..., 2] = 255
    assert pre(bgra).shape == (1, 3, 16, 16)
    assert pre(bgra)[0, 0].mean() > pre(bgra)[0, 2].mean()   # red stays red


@pytest.mark.parametrize("bad", [np.zeros((10, 10, 2), np.uint8), np.zeros((10, 10, 3), np.float32),
                                 np.zeros((2, 10, 10, 3), np.uint8)])
def test_unusable_frames_are_refused_clearly(bad):
    with pytest.raises(FrameError):
        Preprocessor(InputSpec(size=(16, 16)))(bad)


def test_writes_into_the_given_buffer():
    pre = Preprocessor(InputSpec(size=(32, 32)))
    buf = pre.new_buffer()
    out = pre(smooth_frame(), buf)
    assert out is buf
