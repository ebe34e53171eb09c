"""Ending a command-line run without CPython's interpreter teardown.

A Beam run leaves threads behind in the launcher: the runner's idle thread-pool threads (Python
daemon threads) and gRPC's own native threads from the control, data and logging channels. When
the interpreter then finalizes, a daemon thread that still holds stderr's lock, or a native thread
unwound by `pthread_exit` inside C++ code, makes CPython or libstdc++ call `abort()`: the run's
output is committed and its summary printed, yet the process dies of SIGABRT and a caller (a
scheduler, CI, a test) sees a failed run.

`exit_process` avoids the teardown: it runs the registered `atexit` callbacks on the main thread
(logging's flush, Beam's worker-pool cleanup, torch's and pyarrow's hooks) while everything is
still alive, flushes stdout and stderr, and leaves with `os._exit`. Only the `__main__` entry points
use it; code calling `run()` in-process keeps its interpreter.
"""

from __future__ import annotations

import atexit
import os
import sys
import traceback
from typing import Callable


def exit_code(stop: SystemExit) -> int:
    """The status `sys.exit(x)` would give: None -> 0, an int as is, anything else printed -> 1."""
    if stop.code is None:
        return 0
    if isinstance(stop.code, int):
        return stop.code
    print(stop.code, file=sys.stderr)
    return 1


def exit_process(main: Callable[[], int | None]) -> None:
    """Runs `main()` and ends the process with its status, skipping interpreter teardown."""
    try:
        code = main() or 0
    except SystemExit as stop:  # argparse's errors and --help
        code = exit_code(stop)
    except KeyboardInterrupt:
        code = 130
    except BaseException:  # noqa: BLE001 - reported like Python would, then the same exit status
        traceback.print_exc()
        code = 1
    try:
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)
