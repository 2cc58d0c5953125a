"""utils/run_folder.py: the files of a run folder, and which of them a run may replace (the
end-to-end refusals are in tests/test_bad_input.py)."""
import os
import re

import pytest

from common.errors import InputError
from utils import run_folder
from utils.checkpoint import FORMAT, write_checkpoint


def test_run_files_are_log_metrics_and_checkpoints_only(tmp_path):
    for name in ('log.txt', 'metrics.jsonl', 'ckp_ep3.pth.tar', 'last.pth.tar', 'notes.md',
                 'ckp_epX.pth.tar', 'curves.png'):
        (tmp_path / name).write_text('x')
    assert run_folder.run_files(str(tmp_path)) == [
        'ckp_ep3.pth.tar', 'last.pth.tar', 'log.txt', 'metrics.jsonl']
    assert run_folder.run_files(str(tmp_path / 'missing')) == []


def checkpoint_of(run_id, epoch=1):
    return {'format': FORMAT, 'run_id': run_id, 'epoch': epoch, 'iteration': 0,
            'model': {}}


def test_the_resumed_file_is_not_read_again(tmp_path):
    """The resumed last.pth.tar is the checkpoint in memory: were the file read again, its
    other run id and later epoch would refuse the folder."""
    last = tmp_path / 'last.pth.tar'
    write_checkpoint(checkpoint_of('xyz', epoch=9), str(last))
    checkpoint = checkpoint_of('abc')
    found = run_folder.run_files(str(tmp_path))
    assert run_folder.files_in_the_way(str(tmp_path), str(last), checkpoint, found) == (
        [], None, None)


@pytest.mark.parametrize('name', ['last.pth.tar', 'ckp_ep1.pth.tar'])
def test_the_folder_s_run_is_the_one_its_checkpoints_name(tmp_path, name):
    """Resuming from a checkpoint kept elsewhere: the folder's checkpoint (last.pth.tar, else
    the newest epoch checkpoint) says whether it holds the same run."""
    folder, elsewhere = tmp_path / 'run', tmp_path / 'copy.pth.tar'
    folder.mkdir()
    write_checkpoint(checkpoint_of('abc'), str(folder / name))
    write_checkpoint(checkpoint_of('abc'), str(elsewhere))
    (folder / 'log.txt').write_text('[t] New run\n')
    found = run_folder.run_files(str(folder))
    assert run_folder.files_in_the_way(str(folder), str(elsewhere), checkpoint_of('abc'),
                                       found) == ([], None, None)
    doomed, refusal, _ = run_folder.files_in_the_way(str(folder), str(elsewhere),
                                                     checkpoint_of('def'), found)
    assert doomed == found and re.match(r'--save_dir .*run holds another run', refusal)


def test_a_folder_without_checkpoints_takes_only_a_checkpoint_of_its_own(tmp_path):
    """No checkpoint names the folder's run: only a checkpoint lying in the folder continues
    it, whatever its log says."""
    (tmp_path / 'log.txt').write_text('[t] New run (run abc)\n')
    found = run_folder.run_files(str(tmp_path))
    _, refusal, _ = run_folder.files_in_the_way(str(tmp_path), str(tmp_path.parent / 'x'),
                                                checkpoint_of('abc'), found)
    assert refusal.endswith('holds another run (log.txt) than --resume '
                            f'{tmp_path.parent / "x"}; choose another --save_dir')


def test_a_new_run_over_checkpoints_needs_overwrite(tmp_path):
    (tmp_path / 'log.txt').write_text('[t] New run (run abc)\n')
    (tmp_path / 'ckp_ep1.pth.tar').write_text('x')
    with pytest.raises(InputError, match=r'already holds a run .*--resume .*ckp_ep1.pth.tar'):
        run_folder.prepare(str(tmp_path), None, None, overwrite=False)
    assert run_folder.prepare(str(tmp_path), None, None, overwrite=True) == [
        '--overwrite: deleted ckp_ep1.pth.tar, log.txt from --save_dir']
    assert os.listdir(tmp_path) == []
