"""models/ocr.py: the pure helpers, and the RapidOCR engine on real images from ../shared/media/images
(marked slow: each read of a real image takes a second or more on a small CPU)."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest

from models.ocr import (
    DEFAULT_TEXT_MAX_SIDE,
    OcrConfig,
    OcrLine,
    OcrUnavailable,
    RapidOcrEngine,
    load_engine,
    reading_order,
    scale_box,
    text_frame_size,
)

CJK = re.compile(r"[\u4e00-\u9fff]")


def _rgb(media_dir: str, name: str) -> np.ndarray:
    from PIL import Image

    with Image.open(os.path.join(media_dir, "images", name)) as im:
        return np.asarray(im.convert("RGB"))


def _line(text: str, x: float, y: float, w: float = 50, h: float = 20) -> OcrLine:
    box = np.array([x, y, x + w, y, x + w, y + h, x, y + h], dtype=np.float32)
    return OcrLine(text, 0.9, box)


def _joined(lines: list[OcrLine]) -> str:
    return " ".join(ln.text for ln in lines).lower()


@pytest.fixture(scope="module")
def engine() -> RapidOcrEngine:
    return load_engine(OcrConfig())  # loaded once for the module


@pytest.fixture(scope="module")
def en_image(media_dir) -> np.ndarray:
    return _rgb(media_dir, "en.jpg")


@pytest.fixture(scope="module")
def en_lines(engine, en_image) -> list[OcrLine]:
    # en.jpg is 709x132: RapidOCR's detector brings the short side to 736, so each read costs seconds.
    return engine.read(en_image)


# --- pure helpers --------------------------------------------------------------------------------


def test_config_validates():
    with pytest.raises(ValueError, match="engine"):
        OcrConfig(engine="tesseract")
    with pytest.raises(ValueError, match="threads"):
        OcrConfig(threads=-1)
    with pytest.raises(ValueError, match="min_score"):
        OcrConfig(min_score=1.5)


def test_scale_box_round_trip():
    box = np.array([10, 20, 110, 22, 108, 60, 9, 58], dtype=np.float32)
    up = scale_box(box, 2.0, 1.5)
    assert up.dtype == np.float32 and up.shape == (8,)
    np.testing.assert_allclose(up[0::2], box[0::2] * 2.0)
    np.testing.assert_allclose(up[1::2], box[1::2] * 1.5)
    np.testing.assert_allclose(scale_box(up, 1 / 2.0, 1 / 1.5), box, rtol=1e-6)
    assert up is not box and box[0] == 10  # the input is not modified

    line = OcrLine("hello", 0.9, box)
    moved = line.scaled(1920 / 960, 1080 / 540)
    assert (moved.text, moved.score) == ("hello", 0.9)
    np.testing.assert_allclose(moved.box, box * 2.0)

    with pytest.raises(ValueError, match="shape"):
        scale_box(np.zeros((4, 2)), 1.0, 1.0)


def test_text_frame_size_examples():
    assert DEFAULT_TEXT_MAX_SIDE == 960
    assert text_frame_size(1920, 1080) == (960, 540)
    assert text_frame_size(1080, 1920) == (540, 960)  # portrait
    assert text_frame_size(3840, 2160) == (960, 540)
    assert text_frame_size(1920, 1080, max_side=640) == (640, 360)
    assert text_frame_size(640, 360) == (640, 360)  # never upscaled
    assert text_frame_size(641, 361) == (640, 360)  # odd sides rounded down to even
    assert text_frame_size(176, 144) == (176, 144)
    with pytest.raises(ValueError):
        text_frame_size(0, 100)
    with pytest.raises(ValueError):
        text_frame_size(100, 100, max_side=1)


@pytest.mark.parametrize("max_side", [960, 640, 961])
def test_text_frame_size_properties(max_side):
    rng = np.random.default_rng(0)
    for w, h in rng.integers(2, 5000, size=(300, 2)):
        w, h = int(w), int(h)
        nw, nh = text_frame_size(w, h, max_side)
        assert nw % 2 == 0 and nh % 2 == 0
        assert nw <= w and nh <= h  # never up
        assert max(nw, nh) <= max_side
        if max(w, h) > max_side:
            assert max(nw, nh) >= max_side - 1  # uses the budget
        # aspect kept: the shorter side is within 2 px of the exact proportion
        long_in, short_in, long_out, short_out = max(w, h), min(w, h), max(nw, nh), min(nw, nh)
        assert abs(short_out - short_in * long_out / long_in) <= 2 or short_out == 2


def test_reading_order_rows_then_columns():
    # Two rows whose boxes are not level (a slanted right-hand word) and a third row below.
    a, b, c = _line("a", 10, 100), _line("b", 200, 92), _line("c", 400, 104)
    d, e = _line("d", 300, 150), _line("e", 20, 152)
    f = _line("f", 5, 300)
    shuffled = [f, d, c, a, e, b]
    assert [ln.text for ln in reading_order(shuffled)] == ["a", "b", "c", "e", "d", "f"]
    assert [ln.text for ln in reading_order(reversed(shuffled))] == ["a", "b", "c", "e", "d", "f"]
    assert reading_order([]) == []


# --- the RapidOCR engine on real images -----------------------------------------------------------


def _assert_reading_order(lines: list[OcrLine]) -> None:
    for prev, cur in zip(lines, lines[1:]):
        below = cur.box[1::2].mean() > prev.box[1::2].mean()
        right_in_row = cur.box[0::2].min() >= prev.box[0::2].min()
        assert below or right_in_row, f"{cur.text!r} comes after {prev.text!r} but is above and left of it"


def test_model_id(engine):
    mid = engine.model_id()
    assert mid.startswith("rapidocr-onnxruntime==")
    for name in ("ch_PP-OCRv4_det_infer.onnx@", "ch_PP-OCRv4_rec_infer.onnx@", "ch_ppocr_mobile_v2.0_cls_infer.onnx@"):
        assert name in mid
    assert mid == engine.model_id()


@pytest.mark.slow
def test_reads_english(en_lines, en_image):
    text = _joined(en_lines)
    for word in ("dataset", "movieshots", "shot type annotation", "large-scale"):
        assert word in text, text
    h, w = en_image.shape[:2]
    for ln in en_lines:
        assert ln.text == ln.text.strip() and ln.text
        assert 0.0 < ln.score <= 1.0
        assert ln.box.dtype == np.float32 and ln.box.shape == (8,)
        assert (ln.box[0::2] >= -1).all() and (ln.box[0::2] <= w + 1).all()
        assert (ln.box[1::2] >= -1).all() and (ln.box[1::2] <= h + 1).all()
        x, y = ln.box[0::2], ln.box[1::2]
        assert x[1] > x[0] and y[3] > y[0]  # top-left, top-right, bottom-right, bottom-left
    _assert_reading_order(en_lines)
    # The title row comes before the paragraph below it.
    first_para = next(i for i, ln in enumerate(en_lines) if "facilitate" in ln.text.lower())
    assert any("dataset" in ln.text.lower() for ln in en_lines[:first_para])


@pytest.mark.slow
def test_reads_a_page_of_text(engine, media_dir):
    lines = engine.read(_rgb(media_dir, "test.jpg"))
    text = _joined(lines)
    assert "this is a lot of 12 point text" in text
    assert text.count("lazy fox") >= 3
    assert len(lines) >= 6
    _assert_reading_order(lines)


@pytest.mark.slow
def test_reads_chinese_and_digits(engine, media_dir):
    lines = engine.read(_rgb(media_dir, "ch_en_num.jpg"))
    text = "".join(ln.text for ln in lines)
    assert CJK.search(text), text
    assert "正品促销" in text
    assert re.search(r"[0-9]", text), text
    assert "5.8" in text


@pytest.mark.slow
def test_upside_down_image_with_angle_classifier(engine, en_image):
    rotated = np.ascontiguousarray(en_image[::-1, ::-1])  # 180 degrees
    lines = engine.read(rotated)
    text = _joined(lines)
    # The classifier flips each upside-down line crop, so the words come back; the detector splits
    # the upside-down lines somewhat differently, so compare words, not whole lines.
    for word in ("dataset", "movieshots", "large-scale"):
        assert word in text, text
    # Boxes are in the rotated image's pixels: the title is now at the bottom.
    titles = [ln for ln in lines if "dataset" in ln.text.lower()]
    assert any(t.box[1::2].mean() > rotated.shape[0] / 2 for t in titles)


@pytest.mark.slow
def test_upright_read_skips_the_angle_classifier_for_that_call_only(engine, media_dir):
    """`read(image, upright=True)` (a subtitle band) does not ask the classifier, so a crop it would
    turn stays as it is; the engine's own setting is untouched: the next plain read turns it again."""
    title = np.full((240, 330, 3), 255, dtype=np.uint8)
    title[100:140] = _rgb(media_dir, "en.jpg")[:40, :330]
    upside_down = np.ascontiguousarray(title[::-1, ::-1])
    assert "dataset" in _joined(engine.read(title, upright=True))  # upright text reads the same
    turned = _joined(engine.read(upside_down, upright=True))
    assert "dataset" not in turned and "movieshots" not in turned
    assert engine.config.use_cls
    assert "dataset" in _joined(engine.read(upside_down))
    assert [ln.text for ln in engine.read_batch([upside_down], upright=True)[0]] == \
        [ln.text for ln in engine.read(upside_down, upright=True)]


@pytest.mark.slow
def test_blank_image_reads_nothing(engine, media_dir):
    assert engine.read(_rgb(media_dir, "empty_black.jpg")) == []


@pytest.mark.slow
def test_deterministic(engine, media_dir):
    image = _rgb(media_dir, "test.jpg")
    first, second = engine.read_batch([image, image])
    assert [ln.text for ln in first] == [ln.text for ln in second]
    assert [ln.score for ln in first] == [ln.score for ln in second]
    for a, b in zip(first, second):
        assert np.array_equal(a.box, b.box)


def test_rejects_non_rgb_uint8(engine):
    with pytest.raises(ValueError, match="uint8 RGB"):
        engine.read(np.zeros((32, 32, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="uint8 RGB"):
        engine.read(np.zeros((32, 32), dtype=np.uint8))
    with pytest.raises(ValueError, match="empty"):
        engine.read(np.zeros((0, 32, 3), dtype=np.uint8))


@pytest.mark.slow
def test_threads_and_cls_reach_onnxruntime(media_dir):
    eng = load_engine(OcrConfig(threads=1, use_cls=False, min_score=0.6))
    options = eng.session_options()
    assert set(options) == {"det", "rec", "cls"}
    assert all(o.intra_op_num_threads == 1 for o in options.values())
    assert "cls=" not in eng.model_id()  # the classifier is not part of what this engine runs
    # Without the angle classifier the upside-down crops stay upside down and nothing sensible
    # is read at 0.6. A cheap image: the title row on a white canvas (a thin strip would be
    # upscaled to 736 px tall by the detector).
    title = np.full((240, 330, 3), 255, dtype=np.uint8)
    title[100:140] = _rgb(media_dir, "en.jpg")[:40, :330]
    assert "dataset" in _joined(eng.read(title))
    upside_down = _joined(eng.read(np.ascontiguousarray(title[::-1, ::-1])))
    assert "dataset" not in upside_down and "movieshots" not in upside_down
    assert all(ln.score >= 0.6 for ln in eng.read(title))


def test_paddleocr_unavailable_is_quick_and_says_why(no_network):
    try:
        eng = load_engine(OcrConfig(engine="paddleocr"))
    except OcrUnavailable as e:
        message = str(e).lower()
        assert no_network == []  # quick: no attempt to download models
        assert "paddle" in message
        assert "pip install" in message or "models" in message
        return
    pytest.skip(f"paddleocr and its models are installed here ({eng.model_id()})")
