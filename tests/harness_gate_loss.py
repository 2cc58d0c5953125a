"""A loss for the harness's tests (--loss_module; tests/harness/): MS, except that while
the file named by $HARNESS_GATE does not exist, a training waits inside its loss until the
process gets SIGTERM or SIGINT. A test so holds trainings in the middle of an iteration for as
long as it needs, whatever the machine's speed; the signal lets the iteration finish, and the
trainer saves at that boundary and stops (MMSI_train.py). While it waits, the file
`$HARNESS_GATE.waiting.<pid>` exists."""
import os
import signal
import time

import losses
from losses.multi_similarity import MultiSimilarity

_state = {'watching': False, 'signalled': False}


class Gated(MultiSimilarity):
    def anchor_losses(self, sim, pos_sel, neg_sel):
        wait_at_the_gate()
        return super().anchor_losses(sim, pos_sel, neg_sel)


def wait_at_the_gate():
    gate = os.environ.get('HARNESS_GATE')
    if not gate or _state['signalled'] or os.path.exists(gate):
        return
    watch_stop_signals()
    marker = f'{gate}.waiting.{os.getpid()}'
    open(marker, 'w').close()
    while not _state['signalled'] and not os.path.exists(gate):
        time.sleep(0.05)


def watch_stop_signals():
    """Note a stop signal here too, then hand it to the trainer's own handler."""
    if _state['watching']:
        return
    _state['watching'] = True
    for signum in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(signum)

        def handler(number, frame, previous=previous):
            _state['signalled'] = True
            if callable(previous):
                previous(number, frame)
        signal.signal(signum, handler)


losses.register('Gated', Gated)
