"""The error type every stage raises for a bad input: a stable `error_type` plus a message. No Beam.

`error_type` is what lands in the `errors` table or in `videos.stage_errors` (e.g. "FileNotFound",
"TooLarge", "AudioDecodeError"), so it never changes with the wording of the message.
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


def open_container(source: "str | BinaryIO", error: type[InputError], unreadable_type: str, what: str):
    """`av.open(source)` for reading, with the failures every decoder shares as `error`s:
    FileNotFound, NotAFile, and `unreadable_type` for data FFmpeg cannot open as `what`."""
    import av

    try:
        return av.open(source, mode="r", metadata_errors="ignore")
    except FileNotFoundError as e:
        raise error("FileNotFound", f"no such file: {e.filename or source}") from e
    except IsADirectoryError as e:
        raise error("NotAFile", f"is a directory: {e.filename or source}") from e
    except av.error.FFmpegError as e:
        raise error(unreadable_type, f"cannot open as {what}: {e}") from e
