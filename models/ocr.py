"""OCR engines behind one interface: RapidOCR on ONNX Runtime (default) and PaddleOCR. No Beam.

Consumes uint8 RGB frames (numpy [h, w, 3]), ideally already sized by `text_frame_size` in the
decoder. Produces, per frame, a list of `OcrLine` (text, recognition score, the four corners of the
line's box in pixels of the frame that was read) in reading order: top to bottom, then left to right.

Engines:
  * `rapidocr` (default): `rapidocr-onnxruntime`, whose wheel ships the PP-OCRv4 det/rec models and
    the mobile v2.0 angle classifier as ONNX files (Chinese + English). Works offline.
  * `paddleocr` (optional extra): PaddleOCR 2.7+ or 3.x on PaddlePaddle. It downloads its models on
    first use, which a worker must never wait on, so `load()` first checks that the package imports
    and that the model files are already on disk, and raises `OcrUnavailable` at once otherwise.

An engine has a cheap constructor (config only) and a `load()` that reads the models; `load_engine`
does both. Load one engine per worker process and reuse it.
"""

from __future__ import annotations

import abc
import dataclasses
import importlib.metadata
import importlib.util
import logging
import os
import threading
import time
from typing import Iterable, Sequence

import numpy as np

from models.errors import ModelUnavailable
from models.hub import file_sha256

logger = logging.getLogger(__name__)

ENGINES = ("rapidocr", "paddleocr")

# Decode frames for OCR with their longer side at most this (see `text_frame_size`).
DEFAULT_TEXT_MAX_SIDE = 960


class OcrUnavailable(ModelUnavailable):
    """The chosen OCR engine or its models cannot be had here. The message says what is missing."""


@dataclasses.dataclass(frozen=True, eq=False)
class OcrLine:
    text: str
    score: float  # recognition confidence in (0, 1]
    box: np.ndarray  # float32 [8]: x1,y1,..,x4,y4, clockwise from top-left, pixels of the image read

    def scaled(self, sx: float, sy: float) -> OcrLine:
        """The same line with its box mapped to another image size (x times sx, y times sy)."""
        return OcrLine(self.text, self.score, scale_box(self.box, sx, sy))

    def shifted(self, dx: float, dy: float) -> OcrLine:
        """The same line with its box moved by (dx, dy) pixels (a crop's lines back in its frame)."""
        box = np.asarray(self.box, np.float32).copy()
        box[0::2] += dx
        box[1::2] += dy
        return OcrLine(self.text, self.score, box)


def scale_box(box: np.ndarray, sx: float, sy: float) -> np.ndarray:
    """Map a box [8] (x1,y1,..,x4,y4) from the image read to another size: x * sx, y * sy.

    To go back to the original frame, sx = frame_width / read_width and sy likewise.
    """
    box = np.asarray(box, dtype=np.float32)
    if box.shape != (8,):
        raise ValueError(f"box must have shape [8], got {box.shape}")
    out = box.copy()
    out[0::2] *= np.float32(sx)
    out[1::2] *= np.float32(sy)
    return out


def text_frame_size(width: int, height: int, max_side: int = DEFAULT_TEXT_MAX_SIDE) -> tuple[int, int]:
    """(w, h) to decode a width x height frame at for OCR: longer side at most `max_side`, never
    upscaled, both sides even (what swscale and most codecs want), aspect kept to within 2 px.

    Why a bound, and why 960 rather than the CLIP input size: PP-OCR's detector resizes its input
    internally anyway (RapidOCR's det brings the shorter side up to 736, PaddleOCR 2.x's brings the
    longer side down to 960) and every recognised line is resized to 48 px tall, so a larger frame
    mostly costs memory, shuffle bytes and detector time. Text must stay legible though: burned-in
    subtitles on 1080p video are about 40-50 px tall, still >= ~20 px at a 960 long side, where
    PP-OCR reads them reliably; at 224 (CLIP) they would be ~5 px and unreadable.

    Measured with RapidOCR (1 thread, steady state) on five frames of smpte-2997.mp4 (1080p): full
    size 1.6 CPU-s/frame, 960x540 0.8, 640x360 0.8 (the detector upscales both to 736 tall); three
    lines per frame at every size; timecodes all exact at full size, one ';' read as ':' at 960,
    three at 640. A subtitle drawn 27-56 px tall at 1080p is read word for word at 960; at 640 the
    42 px one loses its spaces and the 27 px one is split in two.
    """
    if width < 1 or height < 1:
        raise ValueError(f"frame size must be positive, got {width}x{height}")
    if max_side < 2:
        raise ValueError(f"max_side must be >= 2, got {max_side}")
    long_side, short_side = max(width, height), min(width, height)
    if long_side > max_side:
        # Integer arithmetic: float scaling can land a hair under an even number and floor past it.
        new_long = max_side
        new_short = short_side * max_side // long_side
    else:
        new_long, new_short = long_side, short_side
    new_long = max(2, new_long - new_long % 2)
    new_short = max(2, new_short - new_short % 2)
    return (new_long, new_short) if width >= height else (new_short, new_long)


@dataclasses.dataclass(frozen=True)
class OcrConfig:
    engine: str = "rapidocr"  # one of ENGINES
    threads: int = 0  # intra-op threads for the engine's runtime; 0 lets the runtime choose
    use_cls: bool = True  # run the angle classifier so upside-down lines are read too
    min_score: float = 0.5  # engine-level drop threshold on the recognition score
    # The detector's input: the image's longer side is brought down to this, never up. RapidOCR's
    # own default (shorter side UP to 736) would blow a 640x360 frame up to 1312x736 and spend 4x
    # the detector time on pixels that hold no more detail; frames come here already sized for text.
    det_max_side: int = DEFAULT_TEXT_MAX_SIDE

    def __post_init__(self):
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {self.engine!r}")
        if self.det_max_side < 32:
            raise ValueError(f"det_max_side must be >= 32, got {self.det_max_side}")
        if self.threads < 0:
            raise ValueError(f"threads must be >= 0, got {self.threads}")
        if not 0.0 <= self.min_score <= 1.0:
            raise ValueError(f"min_score must be in [0, 1], got {self.min_score}")


def reading_order(lines: Iterable[OcrLine]) -> list[OcrLine]:
    """Lines sorted top to bottom, then left to right within a row. Deterministic.

    A row starts at the topmost remaining line; a later line joins it when its vertical centre lies
    within that first line's top..bottom. Rows keep the order of their first lines' tops.
    """
    ordered = sorted(lines, key=lambda ln: (_top(ln), _left(ln), ln.text))
    rows: list[list[OcrLine]] = []
    row_top = row_bottom = 0.0
    for ln in ordered:
        centre = float(ln.box[1::2].mean())
        if rows and row_top <= centre <= row_bottom:
            rows[-1].append(ln)
        else:
            rows.append([ln])
            row_top, row_bottom = _top(ln), float(ln.box[1::2].max())
    return [ln for row in rows for ln in sorted(row, key=lambda ln: (_left(ln), _top(ln), ln.text))]


def _top(line: OcrLine) -> float:
    return float(line.box[1::2].min())


def _left(line: OcrLine) -> float:
    return float(line.box[0::2].min())


def _check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", None)
        dtype = getattr(image, "dtype", type(image).__name__)
        raise ValueError(f"OCR input must be a uint8 RGB array [h, w, 3], got {dtype} {shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"OCR input is empty: {image.shape}")


def _rgb_to_bgr(image: np.ndarray) -> np.ndarray:
    # PP-OCR models were trained on cv2.imread (BGR) images, and both engines take an ndarray as BGR.
    return np.ascontiguousarray(image[:, :, ::-1])


def _to_line(box, text, score) -> OcrLine | None:
    text = str(text).strip()
    if not text:  # a detected region whose recognition came back empty carries no content
        return None
    pts = np.asarray(box, dtype=np.float32).reshape(-1)
    if pts.shape != (8,):
        raise ValueError(f"expected a 4-point box, got shape {np.shape(box)}")
    return OcrLine(text=text, score=float(score), box=pts)


class OcrEngine(abc.ABC):
    """One OCR engine. Construct cheaply, `load()` once per process, then `read` frames."""

    name: str = ""

    def __init__(self, config: OcrConfig):
        self.config = config
        self._model_id: str | None = None
        # Beam may run several bundles on threads of one process; the engines keep per-call state
        # on shared objects (RapidOCR sets its det preprocessor per call), so calls are serialised.
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._model_id is not None

    def load(self) -> OcrEngine:
        """Read the models (idempotent). Raises OcrUnavailable when they cannot be had."""
        if not self.loaded:
            start = time.perf_counter()
            self._model_id = self._load()
            logger.info(
                "Loaded OCR engine %s (%s) threads=%s cls=%s in %.2fs",
                self.name, self._model_id, self.config.threads or "auto", self.config.use_cls,
                time.perf_counter() - start,
            )
        return self

    def model_id(self) -> str:
        """A stable description of the engine and model files, for output metadata."""
        self.load()
        return self._model_id  # type: ignore[return-value]

    def read(self, image: np.ndarray, upright: bool = False) -> list[OcrLine]:
        """Text lines in one uint8 RGB frame [h, w, 3], in reading order; [] when it holds none.

        `upright`: the image's lines are known to stand upright (a subtitle band cut from a frame in
        display orientation), so the angle classifier is not asked: on a short line ("So good") it
        may take a caption for upside down and read it turned ("poob os"). A per-call choice: the
        loaded engine is not changed.
        """
        _check_image(image)
        self.load()
        with self._lock:
            lines = self._read(_rgb_to_bgr(image), self.config.use_cls and not upright)
        return reading_order(lines)

    def read_batch(self, images: Sequence[np.ndarray], upright: bool = False) -> list[list[OcrLine]]:
        """`read` for each image, in order."""
        return [self.read(image, upright) for image in images]

    @abc.abstractmethod
    def _load(self) -> str:
        """Load the models; return the model id."""

    @abc.abstractmethod
    def _read(self, bgr: np.ndarray, use_cls: bool) -> list[OcrLine]:
        """Lines in a BGR image, in any order; `use_cls`: run the angle classifier (loaded when
        `config.use_cls`)."""


class RapidOcrEngine(OcrEngine):
    """PP-OCRv4 (det, rec) + mobile angle classifier on ONNX Runtime, via rapidocr-onnxruntime.

    The models ship inside the wheel, so this works offline. Their paths are passed explicitly to
    RapidOCR so the files hashed into `model_id` are the ones loaded.
    """

    name = "rapidocr"
    _PACKAGE = "rapidocr-onnxruntime"

    def __init__(self, config: OcrConfig):
        super().__init__(config)
        self._ocr = None

    def _load(self) -> str:
        try:
            from rapidocr_onnxruntime import RapidOCR
            from rapidocr_onnxruntime.main import DEFAULT_CFG_PATH
            from rapidocr_onnxruntime.utils import read_yaml, update_model_path
        except ImportError as e:
            raise OcrUnavailable(
                f"OCR engine 'rapidocr' needs the {self._PACKAGE} package: pip install {self._PACKAGE}"
            ) from e
        paths = update_model_path(read_yaml(DEFAULT_CFG_PATH))
        models = {part: paths[part.capitalize()]["model_path"] for part in ("det", "rec", "cls")}
        for part, path in models.items():
            if not os.path.isfile(path):
                raise OcrUnavailable(
                    f"{self._PACKAGE} is installed but its {part} model {path} is missing; reinstall it"
                )

        kwargs = {
            "det_model_path": models["det"],
            "rec_model_path": models["rec"],
            "cls_model_path": models["cls"],
            "use_cls": self.config.use_cls,
            "text_score": self.config.min_score,
            "det_limit_type": "max",
            "det_limit_side_len": self.config.det_max_side,
        }
        if self.config.threads:
            cpus = os.cpu_count() or 1
            # RapidOCR silently ignores a thread count above the CPU count; say so instead.
            if self.config.threads > cpus:
                logger.warning(
                    "OCR threads=%d is more than the %d CPUs here; using %d", self.config.threads, cpus, cpus
                )
            kwargs["intra_op_num_threads"] = min(self.config.threads, cpus)
        self._ocr = RapidOCR(**kwargs)

        used = ("det", "rec", "cls") if self.config.use_cls else ("det", "rec")
        files = ",".join(f"{part}={os.path.basename(models[part])}@{file_sha256(models[part])[:12]}" for part in used)
        return f"{self._PACKAGE}=={importlib.metadata.version(self._PACKAGE)}:{files}:det_max_side={self.config.det_max_side}"

    def _read(self, bgr: np.ndarray, use_cls: bool) -> list[OcrLine]:
        # No per-call kwargs besides use_det/use_cls/use_rec: RapidOCR.__call__ resets text_score and
        # det thresholds to its defaults whenever any other is passed.
        result, _elapsed = self._ocr(bgr, use_cls=use_cls)
        if result is None:  # nothing detected, or nothing above text_score
            return []
        lines = (_to_line(box, text, score) for box, text, score in result)
        return [ln for ln in lines if ln is not None]

    def session_options(self) -> dict[str, object]:
        """The ONNX Runtime session options of each loaded model (for checks and logs)."""
        self.load()
        sessions = {"det": self._ocr.text_det.infer, "rec": self._ocr.text_rec.session, "cls": self._ocr.text_cls.infer}
        return {part: s.session.get_session_options() for part, s in sessions.items()}


# PaddleOCR's default model directories (downloaded there on first use by the package itself).
_PADDLE2_DET = ("det", "ch", "ch_PP-OCRv4_det_infer")
_PADDLE2_REC = ("rec", "ch", "ch_PP-OCRv4_rec_infer")
_PADDLE2_CLS = ("cls", "ch_ppocr_mobile_v2.0_cls_infer")
_PADDLE3_DET = "PP-OCRv5_server_det"
_PADDLE3_REC = "PP-OCRv5_server_rec"
_PADDLE3_CLS = ("PP-LCNet_x1_0_textline_ori", "PP-LCNet_x0_25_textline_ori")  # 3.1+ default, 3.0 default


def _paddle2_base_dir() -> str:
    return os.environ.get("PADDLE_OCR_BASE_DIR") or os.path.join(os.path.expanduser("~"), ".paddleocr")


def _paddlex_cache_dir() -> str:
    return os.environ.get("PADDLE_PDX_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".paddlex")


def _paddle_model_present(model_dir: str) -> bool:
    has = lambda name: os.path.isfile(os.path.join(model_dir, name))  # noqa: E731
    return has("inference.pdiparams") and (has("inference.pdmodel") or has("inference.json"))


class PaddleOcrEngine(OcrEngine):
    """PaddleOCR 2.7+ (PP-OCRv4 det/rec, mobile cls) or 3.x (PP-OCRv5 server det/rec, PP-LCNet
    text-line orientation), Chinese + English, on PaddlePaddle.

    Only models already in PaddleOCR's default cache are used (2.x: $PADDLE_OCR_BASE_DIR or
    ~/.paddleocr/whl; 3.x: $PADDLE_PDX_CACHE_HOME or ~/.paddlex/official_models), passed by
    directory so the package never downloads. 3.x's document orientation and unwarping stages are
    off: video frames are not photographed pages.
    """

    name = "paddleocr"

    def __init__(self, config: OcrConfig):
        super().__init__(config)
        self._ocr = None
        self._major = 0

    def _load(self) -> str:
        if importlib.util.find_spec("paddleocr") is None:
            raise OcrUnavailable(
                "OCR engine 'paddleocr' needs the paddleocr package, which is not installed: "
                "pip install 'vmm[paddleocr]' (paddleocr and paddlepaddle), or use --ocr-engine rapidocr"
            )
        if importlib.util.find_spec("paddle") is None:
            raise OcrUnavailable(
                "OCR engine 'paddleocr' needs PaddlePaddle, which is not installed: pip install paddlepaddle "
                "(or paddlepaddle-gpu), or use --ocr-engine rapidocr"
            )
        version = importlib.metadata.version("paddleocr")
        try:
            self._major, minor = (int(p) for p in version.split(".")[:2])
        except ValueError as e:
            raise OcrUnavailable(f"cannot parse the paddleocr version {version!r}") from e
        if (self._major, minor) < (2, 7) or self._major > 3:
            raise OcrUnavailable(f"paddleocr {version} is not supported: install paddleocr>=2.7,<4")
        models = self._paddle3_models() if self._major == 3 else self._paddle2_models()

        missing = [d for d in models.values() if not _paddle_model_present(d)]
        if missing:
            raise OcrUnavailable(
                f"paddleocr {version} is installed but its models are not on this machine (missing "
                f"{', '.join(missing)}). They are downloaded on first use, which this pipeline never waits "
                "on: run PaddleOCR once where the network is reachable and copy the model folders here, "
                "or use --ocr-engine rapidocr"
            )

        try:
            self._ocr = self._construct(models)
        except ImportError as e:
            raise OcrUnavailable(f"paddleocr {version} is installed but does not import: {e}") from e

        ids = ",".join(
            f"{part}={os.path.basename(path.rstrip(os.sep))}@{file_sha256(os.path.join(path, 'inference.pdiparams'))[:12]}"
            for part, path in models.items()
        )
        return f"paddleocr=={version}:{ids}"

    def _paddle2_models(self) -> dict[str, str]:
        whl = os.path.join(_paddle2_base_dir(), "whl")
        models = {"det": os.path.join(whl, *_PADDLE2_DET), "rec": os.path.join(whl, *_PADDLE2_REC)}
        if self.config.use_cls:
            models["cls"] = os.path.join(whl, *_PADDLE2_CLS)
        return models

    def _paddle3_models(self) -> dict[str, str]:
        root = os.path.join(_paddlex_cache_dir(), "official_models")
        models = {"det": os.path.join(root, _PADDLE3_DET), "rec": os.path.join(root, _PADDLE3_REC)}
        if self.config.use_cls:
            found = [os.path.join(root, n) for n in _PADDLE3_CLS if _paddle_model_present(os.path.join(root, n))]
            models["cls"] = found[0] if found else os.path.join(root, _PADDLE3_CLS[0])
        return models

    def _construct(self, models: dict[str, str]):
        if self._major == 3:
            # PaddleX otherwise probes its model hosters over the network when it is imported.
            os.environ.setdefault("PADDLE_PDX_DISABLE_MODEL_SOURCE_CHECK", "True")
            from paddleocr import PaddleOCR

            kwargs = {
                "text_detection_model_name": _PADDLE3_DET,
                "text_detection_model_dir": models["det"],
                "text_recognition_model_name": _PADDLE3_REC,
                "text_recognition_model_dir": models["rec"],
                "use_doc_orientation_classify": False,
                "use_doc_unwarping": False,
                "use_textline_orientation": self.config.use_cls,
                "text_rec_score_thresh": self.config.min_score,
            }
            if self.config.use_cls:
                kwargs["textline_orientation_model_name"] = os.path.basename(models["cls"])
                kwargs["textline_orientation_model_dir"] = models["cls"]
            if self.config.threads:
                kwargs["cpu_threads"] = self.config.threads
            return PaddleOCR(**kwargs)

        from paddleocr import PaddleOCR

        kwargs = {
            "lang": "ch",
            "ocr_version": "PP-OCRv4",
            "det_model_dir": models["det"],
            "rec_model_dir": models["rec"],
            "use_angle_cls": self.config.use_cls,
            "drop_score": self.config.min_score,
            "show_log": False,
        }
        if self.config.use_cls:
            kwargs["cls_model_dir"] = models["cls"]
        if self.config.threads:
            kwargs["cpu_threads"] = self.config.threads
        return PaddleOCR(**kwargs)

    def _read(self, bgr: np.ndarray, use_cls: bool) -> list[OcrLine]:
        if self._major == 3:
            # predict() returns one OCRResult (a dict) per input image.
            (res,) = self._ocr.predict(bgr, use_textline_orientation=use_cls)
            triples = zip(res["rec_polys"], res["rec_texts"], res["rec_scores"])
        else:
            # ocr() returns one entry per image: a list of [box 4x2, (text, score)], or None.
            (res,) = self._ocr.ocr(bgr, cls=use_cls)
            triples = ((box, text, score) for box, (text, score) in (res or []))
        lines = (_to_line(box, text, score) for box, text, score in triples)
        return [ln for ln in lines if ln is not None and ln.score >= self.config.min_score]


_ENGINE_CLASSES: dict[str, type[OcrEngine]] = {"rapidocr": RapidOcrEngine, "paddleocr": PaddleOcrEngine}


def load_engine(config: OcrConfig) -> OcrEngine:
    """The engine `config` names, loaded. Raises OcrUnavailable when it or its models are missing."""
    return _ENGINE_CLASSES[config.engine](config).load()
