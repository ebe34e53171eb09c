"""The error type every stage raises for a bad input: a stable `error_type` plus a message. No Beam.

`error_type` is what lands in the `errors` table or in `videos.stage_errors` (e.g. "FileNotFound",
"TooLarge", "AudioDecodeError"), so it never changes with the wording of the message.
"""

from __future__ import annotations


class InputError(Exception):
    """An input that cannot be processed. `error_type` is a stable name for the output tables."""

    def __init__(self, error_type: str, message: str):
        super().__init__(message)
        self.error_type = error_type

    def __reduce__(self):  # picklable with both arguments: it crosses process boundaries
        return type(self), (self.error_type, str(self))
