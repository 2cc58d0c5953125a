"""A trial's identity: the flags it was trained with, stored in its descriptor before it first
starts. A rerun that changes them is refused, except a higher --epochs with --extend; the flags
that only say how a trial is watched (`flags_with('watch_only')`) are not part of it."""
import contextlib
import io
import os

from common.errors import InputError
from harness.trial import DONE, write_descriptor
from utils.args import build_parser as training_parser
from utils.args import flags_with


def settle_identities(trials, extend):
    """Compare every trial with what its folder was trained with, then write every descriptor
    (the stored identity), all before anything starts. A trial whose flags differ from those it
    trained with is refused (InputError naming the first, nothing written), except a higher
    --epochs for a cell's trial under --extend: its finished marker is dropped and it resumes
    to the new count. A trial without training yet (none, or an abandoned folder) takes this
    command's flags."""
    settled, refused = [], []
    for trial in trials:
        stored = trial.stored()
        if stored is None or not trial.has_trained():
            settled.append((trial, trial.describe(), False))
            continue
        changes = flag_changes(trial, stored)
        if not changes:
            settled.append((trial, stored, False))
            continue
        refusal = refusal_of(trial, changes, extend)
        if refusal:
            refused.append(refusal)
        else:
            settled.append((trial, trial.describe(stored.get('trained_by', ())), True))
    if refused:
        others = f' (and {len(refused) - 1} other run(s))' if len(refused) > 1 else ''
        raise InputError(refused[0] + others)
    for trial, descriptor, extended in settled:
        if extended and trial.finished:
            os.remove(os.path.join(trial.dir, DONE))
        write_descriptor(trial.descriptor_path, descriptor)


def flag_changes(trial, stored):
    """[(flag, old value, new value)]: how this command's flags for `trial` differ from the
    stored ones, compared as the trainer parses them (--lr 1e-4 is --lr 0.0001). A fine-tuning
    trial's --pretrained is the stage-1 checkpoint, whose path moves with DIR: which trial it
    starts from (`start`) is compared instead."""
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # argparse's usage: one line below
            old = vars(training_parser().parse_args(stored['flags']))
    except (KeyError, TypeError, SystemExit):
        raise InputError(f'{trial.descriptor_path}: its stored flags cannot be read; choose '
                         f'another --out') from None
    new = vars(training_parser().parse_args(trial.flags))
    ignored = set(flags_with('watch_only')) | ({'pretrained'} if trial.start else set())
    changes = [(name, old.get(name), new.get(name)) for name in sorted(set(old) | set(new))
               if name not in ignored and old.get(name) != new.get(name)]
    start = trial.start.relative_dir if trial.start else None
    if stored.get('start') != start:
        changes.append(('start', stored.get('start'), start))
    return changes


def refusal_of(trial, changes, extend):
    """Why `trial` may not go on with `changes` to its flags (None: it may, as --extend)."""
    listed = ', '.join(f'--{flag} {old} -> {new}' for flag, old, new in changes)
    flags = [flag for flag, _, _ in changes]
    if extend and trial.is_stage1 and 'epochs' in flags:
        return (f'{trial.relative_dir} was trained with other flags: {listed}; a stage-1 run is '
                f'never extended (its checkpoint is where the cells start): keep its '
                f'--stage1_epochs or choose another --out')
    higher = flags == ['epochs'] and changes[0][2] > changes[0][1]
    if extend and higher:
        return None
    if extend and flags == ['epochs']:
        return f'{trial.relative_dir}: --extend only raises --epochs ({listed})'
    hint = '; for a higher --epochs give --extend' if higher and not trial.is_stage1 else ''
    return (f'{trial.relative_dir} was trained with other flags: {listed}; rerun with its flags '
            f'or choose another --out{hint}')


def record_trainer(trial, command_line):
    """Add the harness command starting `trial` to the commands that trained it (its
    descriptor), which the summary names."""
    descriptor = trial.stored() or trial.describe()
    trained_by = descriptor.setdefault('trained_by', [])
    if command_line not in trained_by:
        trained_by.append(command_line)
        write_descriptor(trial.descriptor_path, descriptor)
