"""A training run in a child process, interrupted at a chosen moment (tests/test_reliability.py):

    python tests/interrupted_run.py INTERRUPTION N MMSI_train-flags...

    kill_in_iteration N      SIGKILL itself at the start of global iteration N
    term_in_evaluation N     SIGTERM to its whole process group (loader workers included),
                             from another process, after the first batch of its N-th
                             evaluation
    term_thrice_in_iteration N
                             in global iteration N: SIGTERM twice at once (one request), then
                             once more after the repeat window (exits at once)

The signals are sent from inside, so that they fall at that moment whatever the machine's
speed. Start it in a process group of its own (start_new_session).
"""
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import MMSI_train  # noqa: E402
import trainer  # noqa: E402
import trainer_MMSI  # noqa: E402
from utils import evaluation  # noqa: E402


def in_iteration(number, action):
    """Run `action()` at the start of global iteration `number` (counted from 1)."""
    for module in (trainer, trainer_MMSI):
        original = module.step

        def step(run, images, labels, original=original):
            if run.global_step + 1 == number:
                action()
            return original(run, images, labels)
        module.step = step


def term_in_evaluation(number):
    original, calls = evaluation.extract_features, []

    def extract_features(model, loader, *args, **kwargs):
        calls.append(1)
        if len(calls) == number:
            loader = signal_after_first(loader)
        return original(model, loader, *args, **kwargs)
    evaluation.extract_features = extract_features


def signal_after_first(batches):
    for index, batch in enumerate(batches):
        if index == 1:  # as a batch system does: the sender is not the workers' parent
            subprocess.run([sys.executable, '-c', 'import os, signal; '
                            f'os.killpg({os.getpgid(0)}, signal.SIGTERM)'])
        yield batch


def term_thrice():
    MMSI_train.SAME_REQUEST_SECONDS = 0.2
    os.kill(os.getpid(), signal.SIGTERM)
    os.kill(os.getpid(), signal.SIGTERM)  # within the window: the same request
    time.sleep(0.5)
    os.kill(os.getpid(), signal.SIGTERM)  # a second request: exits here
    raise AssertionError('still running after a second SIGTERM')


if __name__ == '__main__':
    interruption, number, flags = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    if interruption == 'kill_in_iteration':
        in_iteration(number, lambda: os.kill(os.getpid(), signal.SIGKILL))
    elif interruption == 'term_in_evaluation':
        term_in_evaluation(number)
    elif interruption == 'term_thrice_in_iteration':
        in_iteration(number, term_thrice)
    else:
        raise SystemExit(f'unknown interruption {interruption!r}')
    sys.exit(MMSI_train.main(flags))
