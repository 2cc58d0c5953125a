"""Supervising the trainings: one harness at a time in DIR (its lock), the trials run --jobs at a
time as MMSI_train.py processes, and SIGINT or SIGTERM to the harness passed on to them, which
save and stop (a rerun of the same command resumes them)."""
import fcntl
import os
import signal
import subprocess
import threading
import time

from common.errors import InputError
from harness.identity import record_trainer
from harness.messages import say
from harness.results import last_evaluation, read_rows
from harness.trial import DONE, ROOT

HARNESS_LOCK = 'harness.lock'  # DIR/harness.lock: locked by the harness working in DIR
POLL_SECONDS = 0.2  # how often the harness looks at its trainings and at waiting folders
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def lock_folder(out):
    """DIR/harness.lock, locked (flock) for as long as this harness works in DIR, so that a
    second harness on the same DIR is refused at once instead of racing the first for its
    trials. The lock goes with the process: a killed harness leaves none behind. Returns the
    open file (closing it unlocks)."""
    try:
        os.makedirs(os.path.join(out, 'runs'), exist_ok=True)
        lock = open(os.path.join(out, HARNESS_LOCK), 'a+', encoding='utf-8')
    except OSError as err:
        raise InputError(f'--out {out}: cannot write there ({err.strerror})') from None
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read().strip()
        lock.close()
        raise InputError(f'--out {out} is in use by another compare.py'
                         + (f' (pid {holder})' if holder else '')
                         + '; wait for it to end or choose another --out') from None
    except OSError:  # a file system without locks: go on unguarded
        pass
    lock.truncate(0)
    lock.write(f'{os.getpid()}\n')
    lock.flush()
    return lock


class Stop:
    """SIGINT and SIGTERM to the harness. The handler only notes the signal; the supervisor
    passes each one on to the process group of every running training (`pass_on`), which saves
    at its next iteration boundary and exits 128 + signal (MMSI_train.py), and starts nothing
    more. A second signal is passed on too: the training decides (a repeat within 2 s is the
    same request, a later one exits at once). `restore` puts back the handlers found."""

    def __init__(self):
        self.received = []
        self.announced = False
        self.previous = {}
        if threading.current_thread() is threading.main_thread():
            self.previous = {signum: signal.signal(signum, self.note) for signum in STOP_SIGNALS}

    def note(self, signum, frame):
        self.received.append(signum)

    @property
    def requested(self):
        return bool(self.received)

    @property
    def signum(self):
        """The first signal received (what the harness's exit status tells)."""
        return self.received[0] if self.received else None

    def name(self):
        return signal.Signals(self.signum).name

    def pass_on(self, running):
        if self.received and not self.announced:
            self.announced = True
            say(f'{self.name()} received: {len(running)} training(s) asked to save and stop '
                f'at their next iteration boundary; no new run starts')
        for training in running:
            for signum in self.received[training.forwarded:]:
                try:
                    os.killpg(training.process.pid, signum)
                except ProcessLookupError:  # it has just ended
                    pass
            training.forwarded = len(self.received)

    def restore(self):
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)


def stopped_by_signal(status):
    """Whether an exit status is that of a training stopped by SIGINT or SIGTERM: 128 + signal
    after saving, or killed by it before its handlers were installed."""
    return any(status in (128 + signum, -signum) for signum in STOP_SIGNALS)


class TrialProcess:
    """A trial being trained: the trial, its MMSI_train.py process, its slot (GPU), and how many
    of the harness's stop signals it has been passed."""

    def __init__(self, trial, process, slot):
        self.trial, self.process, self.slot = trial, process, slot
        self.started = time.time()
        self.forwarded = 0


class Supervisor:
    """Trains trials --jobs at a time: one GPU each when there are several, else the CPU
    threads shared out; prints a line when each starts and ends. Each training runs in a
    session of its own, so that Ctrl-C or a signal to the harness's process group reaches the
    harness alone, which passes it on once (Stop) and waits for the trainings to save."""

    def __init__(self, jobs, threads, command_line, stop, keep_checkpoints='all'):
        self.jobs, self.threads = jobs, threads
        self.keep_checkpoints = keep_checkpoints
        self.command_line, self.stop = command_line, stop
        self.devices = visible_gpus()
        self.failed = []  # the trials whose training failed
        self.waiting = set()  # the trials announced as waiting for another training
        self.done = self.total = 0

    def train_all(self, trials):
        for trial in trials:
            if trial.finished:
                say(f'skip {trial.name}: finished')
                self.tidy(trial)
        queue = [trial for trial in trials if not trial.finished]
        self.total, self.done = len(queue), 0
        running = []
        while running or (queue and not self.stop.requested):
            if not self.stop.requested:
                self.start_free(queue, running)
            self.stop.pass_on(running)
            for training in [t for t in running if t.process.poll() is not None]:
                running.remove(training)
                self.finish(training)
            time.sleep(POLL_SECONDS)

    def start_free(self, queue, running):
        """Start queued trials while there are free slots, passing over (for now) those whose
        folder another training holds: an orphan of a killed harness, a training started by
        hand. They start once it has let go."""
        for trial in list(queue):
            if len(running) >= self.jobs:
                return
            if trial.in_use():
                if trial not in self.waiting:
                    self.waiting.add(trial)
                    say(f'waiting for {trial.name}: another training holds it')
                continue
            queue.remove(trial)
            taken = {training.slot for training in running}
            running.append(self.start(trial, min(set(range(self.jobs)) - taken)))

    def start(self, trial, slot):
        env = dict(os.environ, OMP_NUM_THREADS=str(self.threads),
                   MKL_NUM_THREADS=str(self.threads))
        if self.devices:
            env['CUDA_VISIBLE_DEVICES'] = self.devices[slot % len(self.devices)]
        command = trial.command()
        record_trainer(trial, self.command_line)
        say(f'start {trial.name}' + (' (resuming)' if trial.checkpoint() else ''))
        os.makedirs(os.path.dirname(trial.console), exist_ok=True)
        with open(trial.console, 'a', encoding='utf-8') as console:
            process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=console,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        return TrialProcess(trial, process, slot)

    def finish(self, training):
        trial, status = training.trial, training.process.returncode
        self.done += 1
        progress = f'[{self.done}/{self.total}]'
        if status == 0:
            open(os.path.join(trial.dir, DONE), 'w').close()
            self.tidy(trial)
            say(f'{progress} done {trial.name} in {time.time() - training.started:.0f}s: '
                f'{final_r1(trial)}')
        elif training.forwarded and stopped_by_signal(status):
            say(f'{progress} stopped {trial.name} ({self.stop.name()}): its last checkpoint is '
                f'kept')
        else:
            self.failed.append(trial)
            say(f'{progress} FAILED {trial.name} (exit {status}); see {trial.console}')

    def tidy(self, trial):
        """What is done with a finished trial's folder: --keep_checkpoints."""
        if self.keep_checkpoints == 'last':
            trial.prune_checkpoints()


def final_r1(trial):
    try:
        last = last_evaluation(read_rows(trial.dir)) or {}
    except InputError:  # a damaged metrics file: the summary says so
        return 'R@1 unreadable'
    return f'R@1 {last.get("R@1", float("nan")):.4f}'


def visible_gpus():
    try:
        import torch
        count = torch.cuda.device_count()
    except Exception:  # no usable CUDA: run on the CPU
        count = 0
    visible = os.environ.get('CUDA_VISIBLE_DEVICES')
    ids = [d for d in visible.split(',') if d] if visible else [str(i) for i in range(count)]
    return ids[:count]
