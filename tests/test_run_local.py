"""run_local.sh: the runner flags it adds on one machine, and the ones it leaves to the user."""

from __future__ import annotations

import os
import shutil
import subprocess

from tests.conftest import REPO, missing_prerequisite


def _flags_passed(tmp_path, *args: str) -> list[str]:
    """The arguments run_local.sh hands to `vmm extract`, through a stand-in venv whose `vmm` echoes them."""
    if shutil.which("bash") is None:
        missing_prerequisite("run_local.sh needs bash")
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    vmm = venv / "bin" / "vmm"
    vmm.write_text('#!/usr/bin/env bash\nprintf "%s\\n" "$@"\n')
    vmm.chmod(0o755)
    (venv / ".vmm-installed").touch()  # newer than setup.py: the set-up step is skipped
    env = dict(os.environ, VMM_VENV=str(venv))
    proc = subprocess.run(["bash", os.path.join(REPO, "run_local.sh"), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


def _value(flags: list[str], name: str) -> str:
    assert flags.count(name) == 1, flags
    return flags[flags.index(name) + 1]


def test_one_machine_runs_worker_threads_in_one_process(tmp_path):
    flags = _flags_passed(tmp_path, "--input", "videos.jsonl", "--output", "out/")
    assert flags[0] == "extract"
    assert _value(flags, "--runner") == "DirectRunner"
    assert _value(flags, "--direct_running_mode") == "multi_threading"
    cores = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip() or "2"
    assert _value(flags, "--direct_num_workers") == cores  # one worker thread per core
    assert _value(flags, "--input") == "videos.jsonl"


def test_the_users_runner_flags_are_kept(tmp_path):
    flags = _flags_passed(tmp_path, "--input", "v.jsonl", "--output", "o/",
                          "--direct_running_mode", "multi_processing", "--direct_num_workers", "3")
    assert _value(flags, "--direct_running_mode") == "multi_processing"
    assert _value(flags, "--direct_num_workers") == "3"
    assert _value(flags, "--runner") == "DirectRunner"

    flags = _flags_passed(tmp_path / "other", "--input", "v.jsonl", "--output", "o/", "--runner", "PortableRunner")
    assert _value(flags, "--runner") == "PortableRunner"
    assert "--direct_running_mode" not in flags and "--direct_num_workers" not in flags
