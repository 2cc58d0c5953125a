"""Two processes with torchrun and the gloo backend on the CPU: both ranks end with identical
parameters and dictionaries, and the sharded evaluation equals a single-process one."""
import json
import os
import signal
import subprocess
import sys

from collections import Counter

import pytest
import torch

import DataSet

import test as evaluate_script
from tiny_run import run_args
from utils.sampler import FastRandomIdentitySampler, KPBatchSampler

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# Runs MMSI_train.main under torchrun; afterwards every rank saves its parameters and dictionary
# to STATE_DIR/rank<N>.pth (when training finished) and its exit status to rank<N>.status, so
# that the test can check that the ranks agree. With PREEMPT_AT=N in the environment, rank 1
# sends SIGTERM to torchrun after global iteration N, as a batch system would, and waits until
# torchrun has passed it on to the workers.
RANK_STATE_DRIVER = """
import os, signal, sys, time
import torch
sys.path.insert(0, {root!r})
import MMSI_train

def train_and_save_state(run):
    status = original_train(run)
    torch.save({{'model': run.model.state_dict(),
                'dictionary': run.dictionary.state_dict() if run.dictionary else None}},
               f'{states}/rank{{run.dist.rank}}.pth')
    return status

def preempted_after_iteration(run, epoch, iteration, meter):
    if run.dist.rank == 1 and str(run.global_step) == os.environ.get('PREEMPT_AT'):
        os.kill(os.getppid(), signal.SIGTERM)
        deadline = time.time() + 120
        while run.stop_signal is None and time.time() < deadline:
            time.sleep(0.01)
    return original_after_iteration(run, epoch, iteration, meter)

original_train, MMSI_train.train = MMSI_train.train, train_and_save_state
original_after_iteration = MMSI_train.after_iteration
MMSI_train.after_iteration = preempted_after_iteration
status = MMSI_train.main(sys.argv[1:])
with open(f'{states}/rank{{os.environ["RANK"]}}.status', 'w') as f:
    f.write(str(status))
sys.exit(status)
"""


def expected_dictionary_size(glyphs_root, epochs=3, d_size=5):
    """Entries after `epochs` epochs of both ranks' batches (seed 0, 2 classes x 3 per batch)."""
    data = DataSet.create('glyphs', root=glyphs_root)
    sampler = FastRandomIdentitySampler(data.train, 3, seed=0)
    seen = Counter()
    for epoch in range(1, epochs + 1):
        for rank in (0, 1):
            for batch in KPBatchSampler(sampler, 6, rank, 2).epoch_batches(epoch):
                seen.update(data.train.labels[index] for index, _ in batch)
    return sum(min(d_size, count) for count in seen.values())


def torchrun(driver, *flags, **env):
    command = [sys.executable, '-m', 'torch.distributed.run', '--standalone',
               '--nproc_per_node', '2', str(driver), *flags]
    return subprocess.run(command, cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS='1', **env),
                          capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize('mmsi', [0, 1])
def test_two_processes_agree_and_evaluate_like_one(glyphs_root, tmp_path, mmsi):
    """With --MMSI 0 the run is preempted first: SIGTERM to torchrun, which passes it on; both
    processes stop at the same iteration boundary, and a resume under torchrun completes."""
    save_dir, states = tmp_path / 'run', tmp_path / 'states'
    states.mkdir()
    driver = tmp_path / 'driver.py'
    driver.write_text(RANK_STATE_DRIVER.format(root=ROOT, states=str(states)))
    flags = run_args(glyphs_root, save_dir, mmsi=mmsi, epochs=3)
    if not mmsi:
        result = torchrun(driver, *flags, PREEMPT_AT='2')  # epoch 2, iteration 1 of 1
        assert result.returncode != 0, result.stdout[-3000:] + result.stderr[-3000:]
        for rank in (0, 1):
            assert (states / f'rank{rank}.status').read_text() == str(128 + signal.SIGTERM)
        assert (save_dir / 'log.txt').read_text().count(
            'SIGTERM received: stopped after epoch 2 iteration 1;') == 1
        flags += ['--resume', str(save_dir / 'last.pth.tar')]
    result = torchrun(driver, *flags)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    log = (save_dir / 'log.txt').read_text()
    assert '2 processes, batch 6 per process' in log
    assert log.count('Training finished') == 1  # rank 0 alone writes
    rank0, rank1 = (torch.load(states / f'rank{r}.pth', weights_only=False) for r in (0, 1))
    for key, value in rank0['model'].items():
        assert torch.equal(value, rank1['model'][key]), key
    if mmsi:
        for key in ('emb', 'labels'):
            assert torch.equal(rank0['dictionary'][key], rank1['dictionary'][key])
        assert rank0['dictionary']['rows'] == rank1['dictionary']['rows']
        # it holds what both processes' batches pushed, not only one process's
        assert len(rank0['dictionary']['labels']) == expected_dictionary_size(glyphs_root)
    with open(save_dir / 'metrics.jsonl') as f:
        last = [json.loads(line) for line in f][-1]
    assert last['epoch'] == 3 and last['iterations'] == 1

    single = evaluate_script.evaluate_checkpoint(
        ['--resume', str(save_dir / 'last.pth.tar'), '--data_root', glyphs_root,
         '--nThreads', '0', '--progress', '0', '--eval_batch_size', '24'])
    for key, value in single.items():
        assert abs(value - last[key]) < 1e-6, (key, value, last[key])
