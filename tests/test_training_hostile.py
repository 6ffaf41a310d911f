"""Hostile input to training (issue 15), each case an attack's exact reproduction, run for real on tiny data: runs
sharing a folder, crafted or broken resume states, out-of-range flags, unwritable output folders, leftovers."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
import torch
from safetensors.torch import load_file

import train as train_cli
from conftest import ROOT
from datagen import write_idc_kaggle_folder

datasets.disable_progress_bars()
TINY = ['--dataset', 'digits', '--model', 'patchconvnet_test_p4', '--epochs', '1', '--max-steps-per-epoch', '2']


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error: '), err
    return err[0]


@pytest.fixture(scope='module')
def tiny_run(tmp_path_factory) -> Path:
    """A finished tiny run (one epoch of two steps), copied by each test that changes it."""
    out = tmp_path_factory.mktemp('tiny') / 'run'
    assert train_cli.main([*TINY, '--output-dir', str(out)]) == 0
    return out


@pytest.fixture
def run_copy(tiny_run, tmp_path) -> Path:
    copy = tmp_path / 'run'
    shutil.copytree(tiny_run, copy)
    return copy


def _files(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob('*')) if p.is_file()}


# 1. Runs overwrite each other without --overwrite

def test_two_runs_started_at_once_in_one_folder_one_is_refused(tmp_path):
    out = tmp_path / 'shared'
    command = [sys.executable, '-m', 'timm_patchconvnet.cli.train', *TINY, '--output-dir', str(out)]
    runs = [subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    results = [(run.wait(timeout=600), *run.communicate()) for run in runs]
    assert sorted(code for code, _, _ in results) == [0, 2], results
    (_, winner_out, _), = [r for r in results if r[0] == 0]
    (_, _, loser_err), = [r for r in results if r[0] == 2]
    assert loser_err.strip().splitlines() == [f'error: {out} is in use by another run (lock {out / ".lock"}): wait '
                                              'for it to end, or choose another --output-dir.'], loser_err
    assert f'metrics in {out}/metrics.json' in winner_out
    assert json.loads((out / 'metrics.json').read_text())['epochs_run'] == 1


def test_a_run_whose_state_was_deleted_is_not_replaced(run_copy, capsys):
    shutil.rmtree(run_copy / 'state')
    before = _files(run_copy)
    assert train_cli.main([*TINY, '--output-dir', str(run_copy)]) == 2
    assert 'already holds a run: pass --resume' in _error_line(capsys)
    assert _files(run_copy) == before


def test_overwrite_removes_the_old_results_before_training(run_copy, capsys):
    with pytest.raises(SystemExit) as exit_:  # the attack: --epochs 0 reported the old run's accuracy as new
        train_cli.main([*TINY, '--epochs', '0', '--overwrite', '--output-dir', str(run_copy)])
    assert exit_.value.code == 2 and '--epochs: must be >= 1, got 0' in _error_line(capsys)
    # a replacing run that fails before its first save leaves nothing of the old run to pass as its own
    assert train_cli.main([*TINY, '--overwrite', '--batch-size', '5000', '--output-dir', str(run_copy)]) == 2
    assert 'larger than the 1258 training images' in _error_line(capsys)
    assert not any((run_copy / name).exists() for name in ('model.safetensors', 'metrics.json', 'attention.png',
                                                            'config.json', 'state'))


# 2. --resume must not unpickle what the output folder holds

class _Payload:
    """Unpickling it creates `marker`: what a crafted state file would run."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, 'w')


@pytest.mark.parametrize('name', ['custom_checkpoint_0.pkl', 'optimizer.bin', 'scheduler.bin',
                                  'random_states_0.pkl'])
def test_resume_runs_no_code_from_a_crafted_state_file(name, run_copy, tmp_path, capsys):
    marker = tmp_path / 'pwned'
    torch.save(_Payload(marker), run_copy / 'state' / 'epoch-0001' / name)
    assert train_cli.main([*TINY, '--resume', '--output-dir', str(run_copy)]) == 2
    assert not marker.exists()
    line = _error_line(capsys)
    assert line.startswith('error: Cannot resume: ') and 'Start a new run with --overwrite' in line


# 4. --resume with other settings, or a missing or corrupt state: a clear error before any weight is loaded

@pytest.mark.parametrize('change, message', [
    (['--model', 'patchconvnet_ti12_p4'], "'model': ('patchconvnet_test_p4', 'patchconvnet_ti12_p4')"),
    (['--dataset', 'idc'], "'dataset': ('digits', 'idc')"),  # 2 classes instead of 10
])
def test_resume_with_other_settings_is_refused_before_loading(change, message, run_copy, tmp_path, capsys):
    args = [*TINY, '--resume', '--output-dir', str(run_copy), *change]
    if '--dataset' in change:
        args += ['--data-dir', str(write_idc_kaggle_folder(tmp_path / 'idc'))]
    assert train_cli.main(args) == 2
    line = _error_line(capsys)
    assert '--resume with other settings than the saved run' in line and message in line, line


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 2])


@pytest.mark.parametrize('damage, message', [
    (lambda state: shutil.rmtree(state), 'Nothing to resume'),
    (lambda state: shutil.rmtree(state / 'epoch-0001'), 'is incomplete or was saved by an older version'),
    (lambda state: (state / 'latest').write_text('../../elsewhere'), 'should name an epoch-NNNN folder'),
    (lambda state: _truncate(state / 'epoch-0001' / 'progress.json'), 'progress.json is unreadable'),
    (lambda state: (state / 'epoch-0001' / 'progress.json').write_text('{"epoch": "0; rm -rf /"}'),
     'the saved progress is not what this version writes'),
    (lambda state: _truncate(state / 'epoch-0001' / 'model.safetensors'), 'is unreadable or does not fit'),
    (lambda state: _truncate(state / 'epoch-0001' / 'optimizer.bin'), 'is unreadable or does not fit'),
    (lambda state: _truncate(state / 'epoch-0001' / 'random_states_0.pkl'), 'is unreadable or does not fit'),
], ids=['no-state', 'no-epoch-folder', 'pointer-outside', 'progress', 'progress-fields', 'weights', 'optimizer',
        'rng'])
def test_resume_from_a_missing_or_corrupt_state_is_a_clear_error(damage, message, run_copy, capsys):
    damage(run_copy / 'state')
    model = (run_copy / 'model.safetensors').read_bytes()
    assert train_cli.main([*TINY, '--resume', '--output-dir', str(run_copy)]) == 2
    assert message in _error_line(capsys)
    assert (run_copy / 'model.safetensors').read_bytes() == model


# 3. Numeric flags are checked when the command line is read

@pytest.mark.parametrize('flag, value, allowed', [
    ('--batch-size', '0', '>= 1'), ('--batch-size', '-5', '>= 1'), ('--epochs', '-1', '>= 1'),
    ('--epochs', '0', '>= 1'), ('--grad-accum-steps', '0', '>= 1'), ('--img-size', '3', '>= 8'),
    ('--img-size', '-8', '>= 8'), ('--lr', '-1', '> 0'), ('--lr', 'nan', '> 0'), ('--label-smoothing', '2', '< 1'),
    ('--drop-path', '1.5', '< 1'), ('--num-workers', '-1', '>= 0'), ('--max-steps-per-epoch', '-3', '>= 1'),
    ('--report-to', 'bogus', 'tensorboard'), ('--batch-size', 'many', 'an integer >= 1'),
    ('--warmup-epochs', '1e308', '<= 1000000'),  # issue 26: an OverflowError at the schedule
])
def test_out_of_range_flags_stop_at_once_naming_the_flag_and_range(flag, value, allowed, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        train_cli.main([*TINY, flag, value, '--output-dir', str(tmp_path / 'out')])
    line = _error_line(capsys)
    assert exit_.value.code == 2 and line.startswith(f'error: argument {flag}: must be ') and allowed in line, line
    assert not (tmp_path / 'out').exists()


# 5. An output folder that cannot be written is found before training

def test_a_file_as_output_dir_is_refused_before_training(tmp_path, capsys):
    (tmp_path / 'file').write_text('not a folder')
    assert train_cli.main([*TINY, '--output-dir', str(tmp_path / 'file')]) == 2
    assert f'--output-dir {tmp_path / "file"} cannot be written to' in _error_line(capsys)
    assert (tmp_path / 'file').read_text() == 'not a folder'


def _read_only_folder(tmp_path: Path) -> Path:
    if os.geteuid() != 0:
        (tmp_path / 'ro').mkdir(mode=0o555)
        return tmp_path / 'ro'
    # root writes through permission bits; sysfs refuses new files to everyone
    assert not os.access('/sys/kernel', os.W_OK) or not _can_create_in(Path('/sys/kernel'))
    return Path('/sys/kernel')


def _can_create_in(folder: Path) -> bool:
    try:
        (folder / '.probe').touch()
    except OSError:
        return False
    (folder / '.probe').unlink()
    return True


def test_a_read_only_output_dir_is_refused_before_training(tmp_path, capsys):
    folder = _read_only_folder(tmp_path)
    before = sorted(p.name for p in folder.iterdir())
    assert train_cli.main([*TINY, '--output-dir', str(folder)]) == 2
    line = _error_line(capsys)  # as root, /sys/kernel: not empty and not a run's, refused before the write probe
    assert 'cannot be written to' in line or 'is not the folder of a run' in line, line
    assert sorted(p.name for p in folder.iterdir()) == before


# 7. What a killed run left behind is removed; the model file gets a plain file's permissions

def test_leftovers_of_a_killed_run_are_removed_on_the_next_start(run_copy):
    (run_copy / '.staging.abc').mkdir()
    (run_copy / '.staging.abc' / 'model.safetensors').write_bytes(b'half')
    (run_copy / '.metrics.json.x1y2.json').write_text('{')
    (run_copy / 'state' / 'epoch-0002').mkdir()  # a save cut short: `latest` still names epoch-0001
    (run_copy / 'state' / '.latest.tmp').write_text('epoch-0002')
    weights = (run_copy / 'model.safetensors').read_bytes()
    assert train_cli.main([*TINY, '--resume', '--output-dir', str(run_copy)]) == 0  # nothing left to train
    left = sorted(p.name for p in run_copy.rglob('.*') if p.name not in ('.lock', '.patchconvnet-run')) + sorted(
        p.name for p in (run_copy / 'state').iterdir())
    assert left == ['epoch-0001', 'latest'], left
    assert (run_copy / 'model.safetensors').read_bytes() == weights


def test_the_model_file_has_the_permissions_of_the_other_files(tiny_run):
    umask = os.umask(0)
    os.umask(umask)
    for name in ('model.safetensors', 'config.json', 'metrics.json'):
        assert (tiny_run / name).stat().st_mode & 0o777 == 0o666 & ~umask, name
    assert set(load_file(tiny_run / 'model.safetensors'))


# 6. --pretrained that cannot be read: one clear error each

@pytest.fixture(scope='module')
def bad_checkpoints(tmp_path_factory, tiny_run) -> Path:
    import timm
    from safetensors.torch import save_file
    root = tmp_path_factory.mktemp('checkpoints')
    weights = (tiny_run / 'model.safetensors').read_bytes()
    (root / 'truncated.safetensors').write_bytes(weights[:len(weights) // 2])
    save_file(timm.create_model('resnet18', num_classes=10).state_dict(), root / 'resnet18.safetensors')
    save_file(timm.create_model('patchconvnet_ti12_p4', num_classes=10).state_dict(), root / 'ti12.safetensors')
    return root


@pytest.mark.parametrize('pretrained, message', [
    ('{root}/truncated.safetensors', 'truncated.safetensors cannot be read (SafetensorError: '),
    ('{root}/resnet18.safetensors', 'no head.weight): is it a checkpoint of another architecture?'),
    ('{root}/ti12.safetensors', 'does not fit --model patchconvnet_test_p4 (weights of another architecture or size?)'),
    ('local-dir:{root}/no-such-run', "no-such-run' is no such folder. A model is"),
    ('hf-hub:someone/no-such-repo', 'hf-hub:someone/no-such-repo cannot be read (LocalEntryNotFoundError: '),
    ('{root}/mistyped.safetensors', "mistyped.safetensors' is no such folder or file. A model is"),
    ('runs/mistyped', "--pretrained 'runs/mistyped' is no such folder or file. A model is"),
], ids=['truncated', 'other-architecture', 'other-size', 'no-local-dir', 'hub-offline', 'no-file', 'no-path'])
def test_unreadable_pretrained_weights_are_one_clear_error(pretrained, message, bad_checkpoints, tmp_path, capsys,
                                                          monkeypatch):
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    from huggingface_hub import constants
    monkeypatch.setattr(constants, 'HF_HUB_OFFLINE', True)
    args = [*TINY, '--pretrained', pretrained.format(root=bad_checkpoints), '--output-dir', str(tmp_path / 'out')]
    assert train_cli.main(args) == 2
    assert message in _error_line(capsys)


def test_hub_weights_without_network_fail_at_once(tmp_path, monkeypatch):
    """Not offline by HF_HUB_OFFLINE, but no network: the host lookup fails, not huggingface_hub's 48 s of retries."""
    import time

    import timm
    from huggingface_hub import constants

    from timm_patchconvnet import PretrainedWeightsUnavailableError
    monkeypatch.setattr(constants, 'HF_HUB_OFFLINE', False)
    monkeypatch.setattr(constants, 'ENDPOINT', 'https://hub.invalid')  # .invalid never resolves (RFC 2606)
    monkeypatch.setattr(constants, 'HF_HUB_CACHE', str(tmp_path / 'empty-cache'))
    started = time.time()
    with pytest.raises(PretrainedWeightsUnavailableError, match='the Hub host hub.invalid cannot be resolved'):
        timm.create_model('patchconvnet_test_p4', pretrained=True,
                          pretrained_cfg_overlay=dict(hf_hub_id='lab/patchconvnet_test_p4.digits'))
    assert time.time() - started < 10


# Issue 26: the last reliability issue's leftovers, and a lock file left in a folder of the user's

def test_hub_weights_fail_fast_without_hf_hub_offline(tmp_path, monkeypatch, capsys):
    """For real: this machine cannot reach the Hub, and HF_HUB_OFFLINE is not set (timm used to retry ~30 s)."""
    import time

    from huggingface_hub import constants
    monkeypatch.delenv('HF_HUB_OFFLINE', raising=False)
    monkeypatch.setattr(constants, 'HF_HUB_OFFLINE', False)
    monkeypatch.setattr(constants, 'HF_HUB_CACHE', str(tmp_path / 'empty-cache'))
    started = time.time()
    code = train_cli.main([*TINY, '--pretrained', 'hf-hub:someone/no-such-repo', '--output-dir', str(tmp_path / 'o')])
    line = _error_line(capsys)
    assert code == 2 and line.startswith('error: --pretrained hf-hub:someone/no-such-repo'), line
    assert time.time() - started < 10, time.time() - started


def test_a_failed_run_leaves_no_lock_file_in_a_folder_it_did_not_create(tmp_path, capsys):
    """An empty folder of the user's (a non-empty one is refused before anything, see below): neither the lock
    file nor the run marker stays behind when the run fails before writing anything."""
    folder = tmp_path / 'mine'
    folder.mkdir()
    assert train_cli.main([*TINY, '--pretrained', 'runs/mistyped', '--output-dir', str(folder)]) == 2
    assert 'is no such folder or file' in _error_line(capsys)
    assert sorted(p.name for p in folder.iterdir()) == []


def _free_port() -> int:
    import socket
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        return probe.getsockname()[1]


@pytest.mark.slow  # two fresh processes importing torch, timm and datasets: about 30 s on two shared cores
@pytest.mark.parametrize('refusal', ['locked', 'nothing-to-resume'])
def test_every_process_of_a_run_exits_with_the_main_ones_refusal(tmp_path, refusal):
    """Two gloo processes, the folder locked by another run, or --resume with nothing to resume (refused inside
    the main process's turn before the others): rank 1 used to wait at a barrier for ever."""
    from contextlib import nullcontext

    from filelock import FileLock

    out = tmp_path / 'busy'
    out.mkdir()
    port = str(_free_port())
    extra = ['--resume'] if refusal == 'nothing-to-resume' else []
    with FileLock(out / '.lock', timeout=0) if refusal == 'locked' else nullcontext():
        ranks = [subprocess.Popen(
            [sys.executable, '-m', 'timm_patchconvnet.cli.train', *TINY, *extra, '--output-dir', str(out)], cwd=ROOT,
            env={**os.environ, 'RANK': str(rank), 'LOCAL_RANK': str(rank), 'WORLD_SIZE': '2', 'LOCAL_WORLD_SIZE': '2',
                 'MASTER_ADDR': '127.0.0.1', 'MASTER_PORT': port, 'OMP_NUM_THREADS': '1'},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for rank in range(2)]
        try:
            results = [(rank.wait(timeout=120), rank.communicate()[1]) for rank in ranks]
        finally:
            for rank in ranks:
                rank.kill()
    expected = (f'error: {out} is in use by another run (lock {out / ".lock"}): wait for it to end, or choose another'
                if refusal == 'locked' else f'error: Nothing to resume: {out / "state"} holds no saved training state')
    for code, err in results:
        assert code == 2 and err.strip().splitlines()[-1].startswith(expected), (code, err)


@pytest.mark.parametrize('flag', ['--dataset', '--data-dir'])
def test_an_output_dir_inside_the_data_folder_is_refused(flag, tmp_path, capsys):
    """Issue 26: the run's attention.png became data of the next run ('No label column' or a class of its own)."""
    from datagen import save_random_png
    for label in ('cat', 'dog'):
        save_random_png(tmp_path / 'pets' / label / '0.png')
    data = ['--dataset', str(tmp_path / 'pets')] if flag == '--dataset' else ['--dataset', 'idc', '--data-dir',
                                                                             str(tmp_path / 'pets')]
    args = [*TINY[2:], *data, '--output-dir', str(tmp_path / 'pets' / 'runs' / 'a')]
    assert train_cli.main(args) == 2
    assert f'lies inside the data folder {tmp_path / "pets"}' in _error_line(capsys)
    assert sorted(p.name for p in (tmp_path / 'pets').iterdir()) == ['cat', 'dog']


# Issue 26: a folder that is not a run's is never written into or cleared; patient ids that are paths

@pytest.mark.parametrize('overwrite', [False, True])
def test_a_folder_that_is_not_a_run_is_refused_and_left_as_it_was(overwrite, tmp_path, capsys):
    """The attacks: --overwrite deleted the user's slides/ and state/ folders; without it, their config.json and
    attention.png were overwritten. A folder without the run marker is the user's, --overwrite or not."""
    theirs = tmp_path / 'mine'
    for name in ('slides/notes.txt', 'state/keep.txt', 'config.json', 'attention.png'):
        (theirs / name).parent.mkdir(parents=True, exist_ok=True)
        (theirs / name).write_text(f'the user\'s {name}')
    before = _files(theirs)
    args = [*TINY, '--output-dir', str(theirs), *(['--overwrite'] if overwrite else [])]
    assert train_cli.main(args) == 2
    line = _error_line(capsys)
    assert line == (f'error: {theirs} is not empty (attention.png, config.json, slides, ...) and is not the folder '
                    'of a run (.patchconvnet-run is missing): its files are never replaced, --overwrite or not. '
                    'Choose a new or empty --output-dir.'), line
    assert _files(theirs) == before and sorted(p.name for p in theirs.iterdir()) == sorted(
        ['slides', 'state', 'config.json', 'attention.png'])


def test_a_run_folder_carries_the_marker_and_overwrite_replaces_only_its_outputs(run_copy, capsys):
    assert (run_copy / '.patchconvnet-run').is_file()
    (run_copy / 'notes.txt').write_text('the user\'s')
    assert train_cli.main([*TINY, '--overwrite', '--output-dir', str(run_copy)]) == 0
    assert (run_copy / 'notes.txt').read_text() == 'the user\'s'


def test_a_run_saved_before_the_marker_still_resumes(run_copy):
    (run_copy / '.patchconvnet-run').unlink()
    assert train_cli.main([*TINY, '--resume', '--output-dir', str(run_copy)]) == 0  # nothing left to train
    assert (run_copy / '.patchconvnet-run').is_file()  # marked now


@pytest.mark.parametrize('patient', ['../../x', '/abs/x'])
def test_a_slides_patient_that_is_a_path_is_refused(patient, tmp_path, capsys):
    from timm_patchconvnet.cli import slides as slides_cli
    with pytest.raises(SystemExit) as exit_:
        slides_cli.main(['--model', 'patchconvnet_test_p4', '--data-dir', str(tmp_path), '--patient', patient,
                         '--out', str(tmp_path / 'out')])
    assert exit_.value.code == 2 and 'cannot be a file name' in _error_line(capsys)
    assert not (tmp_path / 'out').exists()
