"""exit_process: a command's status and its atexit work survive skipping interpreter teardown."""

import subprocess
import sys

import pytest

from tests.conftest import REPO

PROGRAM = """
import atexit, sys, threading, time
from pipelines.process_exit import exit_process
atexit.register(lambda: print("atexit ran", flush=False))
def spin():  # a daemon thread still writing to stderr when main ends
    while True:
        sys.stderr.write("x" * 4096)
threading.Thread(target=spin, daemon=True).start()
def main():
    print("main ran", flush=False)
    {body}
exit_process(main)
"""


@pytest.mark.parametrize("body, code, stderr_has", [
    ("return 0", 0, ""),
    ("return None", 0, ""),
    ("return 3", 3, ""),
    ("raise SystemExit(2)", 2, ""),
    ("raise SystemExit('bad flag')", 1, "bad flag"),
    ("raise RuntimeError('boom')", 1, "RuntimeError: boom"),
])
def test_exit_status_and_atexit(body, code, stderr_has):
    done = subprocess.run([sys.executable, "-c", PROGRAM.format(body=body)], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == code, done.stderr[-2000:]
    # Unflushed stdout written before and during exit still arrives, in order.
    assert done.stdout.splitlines() == ["main ran", "atexit ran"]
    assert stderr_has in done.stderr
