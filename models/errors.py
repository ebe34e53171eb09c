"""Error types shared by the models. No Beam.

`InputError`: what every stage raises for a bad input, a stable `error_type` plus a message.
`error_type` is what lands in the `errors` table or in `videos.stage_errors` (e.g. "FileNotFound",
"TooLarge", "AudioDecodeError"), so it never changes with the wording of the message.

`CannotStart` / `ModelUnavailable`: why a run cannot start at all (`pipelines.options.run_command`
prints the message as one line and exits 2).
"""

from __future__ import annotations

from typing import BinaryIO


class InputError(Exception):
    """An input that cannot be processed. `error_type` is a stable name for the output tables."""

    def __init__(self, error_type: str, message: str):
        super().__init__(message)
        self.error_type = error_type

    def __reduce__(self):  # picklable with both arguments: it crosses process boundaries
        return type(self), (self.error_type, str(self))


def open_container(source: "str | BinaryIO", error: type[InputError], unreadable_type: str, what: str,
                   not_media_type: str | None = None):
    """`av.open(source)` for reading, with the failures every decoder shares as `error`s:
    FileNotFound, NotAFile, and `unreadable_type` for data FFmpeg cannot open as `what`. With
    `not_media_type`, data that does not even start like a media file (`media_signature`) is told
    apart from a damaged or truncated one: FFmpeg gives both the same "Invalid data" error."""
    import av

    try:
        return av.open(source, mode="r", metadata_errors="ignore")
    except FileNotFoundError as e:
        raise error("FileNotFound", f"no such file: {e.filename or source}") from e
    except IsADirectoryError as e:
        raise error("NotAFile", f"is a directory: {e.filename or source}") from e
    except av.error.FFmpegError as e:
        if not_media_type is not None:
            head = _head(source)
            if head is not None and media_signature(head) is None:
                raise error(not_media_type, f"not a media file ({_describe(head)}; FFmpeg finds no audio or "
                                            "video container in it)") from e
        raise error(unreadable_type, f"cannot open as {what} (damaged or truncated?): {e}") from e


# How the media files FFmpeg reads begin: (offset, bytes, name). A file that starts with none of these
# and that FFmpeg cannot open is not a damaged video but something else (text, an archive, empty).
_SIGNATURES = (
    (4, b"ftyp", "MP4/MOV"), (4, b"moov", "MOV"), (4, b"mdat", "MOV"), (4, b"free", "MOV"),
    (4, b"wide", "MOV"), (4, b"skip", "MOV"), (4, b"pnot", "MOV"),
    (0, b"\x1a\x45\xdf\xa3", "Matroska/WebM"), (0, b"RIFF", "RIFF (AVI/WAV/WebP)"), (0, b"FLV", "FLV"),
    (0, b"OggS", "Ogg"), (0, b"\x30\x26\xb2\x75\x8e\x66\xcf\x11", "ASF/WMV"), (0, b"YUV4MPEG2", "Y4M"),
    (0, b".RMF", "RealMedia"), (0, b"\x06\x0e\x2b\x34", "MXF"), (0, b"\x00\x00\x01\xba", "MPEG-PS"),
    (0, b"\x00\x00\x01\xb3", "MPEG video"), (0, b"\x00\x00\x00\x01", "H.264/H.265 stream"),
    (0, b"\x00\x00\x01", "MPEG stream"), (0, b"ID3", "MP3"), (0, b"fLaC", "FLAC"), (0, b"#!AMR", "AMR"),
    (0, b"FORM", "AIFF"), (0, b"\xff\xd8\xff", "JPEG"), (0, b"\x89PNG", "PNG"), (0, b"GIF8", "GIF"),
    (0, b"BM", "BMP"), (0, b"II*\x00", "TIFF"), (0, b"MM\x00*", "TIFF"), (0, b"DHAV", "DHAV"),
)


def media_signature(head: bytes) -> str | None:
    """The kind of media file `head` (a file's first bytes, 512 are enough) starts like, or None."""
    for offset, magic, name in _SIGNATURES:
        if head[offset:offset + len(magic)] == magic:
            return name
    if head[:1] == b"\x47" and (len(head) <= 188 or head[188:189] == b"\x47"):
        return "MPEG-TS"
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:
        return "MPEG audio (MP3/AAC)"
    return None


def _head(source: "str | BinaryIO", size: int = 512) -> bytes | None:
    try:
        if isinstance(source, str):
            with open(source, "rb") as f:
                return f.read(size)
        source.seek(0)
        return source.read(size)
    except (OSError, ValueError, AttributeError):
        return None


def _describe(head: bytes) -> str:
    if not head:
        return "the file is empty"
    text = head.decode("utf-8", errors="replace")
    if "\ufffd" not in text and all(c.isprintable() or c in "\r\n\t" for c in text):
        return "the file is text"
    return f"the file starts with bytes {head[:8].hex(' ')}"


class CannotStart(Exception):
    """A run that cannot start: a flag, an input or a model that is not usable here. The message is
    one line that says why and what to pass instead; the command line prints it alone (exit 2)."""


class ModelUnavailable(CannotStart, RuntimeError):
    """A model, its weights or the device it should run on cannot be had here (CLIP weights, an OCR
    engine, a Whisper model, CUDA). Each model family subclasses it."""


class DeviceUnavailable(ModelUnavailable):
    """The requested device (e.g. `cuda`) is not on this machine."""
