"""Fixtures of the harness's tests: harness processes stopped at the end of a test, and one
finished tiny grid that several tests copy (trained once per session)."""
import os
import shutil
import signal

import pytest

from harness_testing import RELATIVE_OUT, ROOT, TIMEOUT, start_harness, tiny_flags


@pytest.fixture
def harnesses():
    """Harness processes a test starts; any still running at its end (a failed test) is
    stopped, and the gate of tests/harness_gate_loss.py opened so that no training waits."""
    started, gates = [], []
    yield started, gates
    for gate in gates:
        gate.touch()
    for harness in started:
        if harness.poll() is None:
            os.killpg(harness.pid, signal.SIGTERM)
            harness.wait(timeout=TIMEOUT)


@pytest.fixture(scope='session')
def finished_grid(glyphs_root, tmp_path_factory):
    """(folder the harness ran in, its arguments, output) of a finished fine-tuning grid (stage
    1 and an MS plain and an MMSI cell, one seed, one epoch each) trained from another folder
    than the repository with a relative --out, keeping only the checkpoints a cell starts or
    continues from. Tests copy it, never write into it."""
    base = tmp_path_factory.mktemp('relative')
    arguments = ['--out', RELATIVE_OUT, '--losses', 'MS', '--mmsi', '0', '1', '--seeds', '0',
                 '--stage1_epochs', '1', '--jobs', '2', '--threads', '1',
                 '--keep_checkpoints', 'last', '--',
                 *tiny_flags(glyphs_root)]
    output = base / 'harness.txt'
    try:
        status = start_harness(arguments, output, cwd=base).wait(timeout=TIMEOUT)
    finally:  # the old behaviour trained in the repository: do not leave that behind
        in_repository = os.path.join(ROOT, RELATIVE_OUT)
        split = os.path.exists(in_repository)
        shutil.rmtree(in_repository, ignore_errors=True)
    assert status == 0 and not split, output.read_text()
    return base, arguments, output.read_text()
