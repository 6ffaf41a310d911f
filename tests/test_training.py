"""Training for real on small real data: learning, outputs, resume after a kill, two processes, presets, errors."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import datasets
import pytest
import timm
import torch
from safetensors.torch import load_file

import train as train_cli
from conftest import OFFICIAL_S60_KEYS, ROOT
from datagen import write_cifar10_parquet, write_idc_kaggle_folder, write_idc_patients
from timm_patchconvnet.cli.train import parse_config
from timm_patchconvnet.config import public_command
from timm_patchconvnet.training import TrainConfig
from timm_patchconvnet.training.presets import PRESETS, preset_settings
from test_parity import official_s60_state_dict

datasets.disable_progress_bars()
FAST = ['--dataset', 'digits', '--model', 'patchconvnet_test_p4']


def _metrics(out: Path) -> dict:
    return json.loads((out / 'metrics.json').read_text())


@pytest.fixture(scope='module')
def digits_run(tmp_path_factory) -> Path:
    """A real run of the small model on scikit-learn's digits: 3 epochs, about 30 s on 2 cores."""
    out = tmp_path_factory.mktemp('digits') / 'run'
    assert train_cli.main(['--dataset', 'digits', '--model', 'patchconvnet_ti12_p4', '--epochs', '3',
                           '--sched', 'constant', '--output-dir', str(out)]) == 0
    return out


def test_training_learns_and_writes_every_output(digits_run):
    metrics = _metrics(digits_run)
    history = metrics['history']
    assert [h['epoch'] for h in history] == [1, 2, 3]
    assert history[-1]['validation_loss'] < 0.8 * history[0]['validation_loss']
    assert metrics['test']['accuracy'] > 0.5  # chance is 0.1
    assert metrics['test']['num_samples'] == 359 and len(metrics['test']['per_class_accuracy']) == 10
    assert metrics['data']['source'] == 'sklearn.datasets.load_digits' and 'seed=0' in metrics['data']['protocol']
    assert metrics['config']['model'] == 'patchconvnet_ti12_p4' and metrics['environment']['num_processes'] == 1
    assert (digits_run / 'attention.png').stat().st_size > 10_000
    assert (digits_run / 'state' / 'latest').read_text() == 'epoch-0003'
    assert metrics['config']['loader'] == 'decoded'  # the default: from the decoded cache of the session


def test_the_decoded_cache_holds_the_runs_splits(digits_run, decoded_cache):
    names = sorted(p.name.rsplit('-', 1)[0] for p in decoded_cache.iterdir() if p.name.startswith('digits-'))
    assert {'digits-train', 'digits-validation', 'digits-test'} <= set(names)


def test_the_pil_loader_trains_too(tmp_path):
    # no worker processes whatever the cores: each worker draws its own augmentations, so their number changes the
    # run; 8 epochs: over seeds 0-3 test accuracy was 0.56-0.71 (4 epochs: as low as 0.17)
    assert train_cli.main([*FAST, '--loader', 'pil', '--num-workers', '0', '--epochs', '8', '--lr', '1e-2', '--sched',
                           'constant', '--output-dir', str(tmp_path)]) == 0
    metrics = _metrics(tmp_path)
    assert metrics['history'][-1]['validation_loss'] < metrics['history'][0]['validation_loss']
    assert metrics['config']['loader'] == 'pil' and metrics['test']['accuracy'] > 0.25  # chance is 0.1


def test_resume_takes_options_newer_than_the_saved_run(tmp_path):
    """A run saved before --loader existed resumes at the new option's default, not at another value; a changed
    option that the saved run has is refused."""
    from timm_patchconvnet.training.loop import Progress, TrainingError
    key = {'model': 'patchconvnet_test_p4', 'loader': 'decoded', 'num_processes': 1}
    older = Progress({k: v for k, v in key.items() if k != 'loader'}).state_dict()
    progress = Progress(key)
    progress.load_state_dict(older)
    assert progress.run_key == key
    with pytest.raises(TrainingError, match="'model': \\('patchconvnet_ti12_p4'"):
        Progress(key).load_state_dict({**older, 'run_key': {**older['run_key'], 'model': 'patchconvnet_ti12_p4'}})
    # a newer option set away from its default would change what the saved run was: refused before any weight
    with pytest.raises(TrainingError, match='--class-tokens did not exist when this run was saved'):
        Progress({**key, 'class_tokens': 'per_class'}).load_state_dict(older)


def test_the_output_folder_is_a_timm_local_dir(digits_run):
    config = json.loads((digits_run / 'config.json').read_text())
    assert config['architecture'] == 'patchconvnet_ti12_p4' and config['label_names'] == [str(d) for d in range(10)]
    data_config = config['pretrained_cfg']  # what the run used, not the model's default (CIFAR-10) tag
    assert data_config['input_size'] == [3, 32, 32] and data_config['label_names'] == config['label_names']
    assert data_config['mean'] == list(timm.data.IMAGENET_DEFAULT_MEAN) and data_config['crop_pct'] == 1.0
    model = timm.create_model(f'local-dir:{digits_run}', pretrained=True).eval()
    reference = timm.create_model('patchconvnet_ti12_p4', num_classes=10).eval()
    reference.load_state_dict(load_file(digits_run / 'model.safetensors'))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=0, atol=0)


def test_evaluation_of_the_saved_model_reproduces_the_test_metrics(digits_run, capsys):
    assert train_cli.main(['--eval-only', '--pretrained', f'local-dir:{digits_run}', '--dataset', 'digits']) == 0
    evaluated = json.loads(capsys.readouterr().out)
    saved = _metrics(digits_run)['test']
    assert evaluated['confusion_matrix'] == saved['confusion_matrix']
    assert evaluated['loss'] == pytest.approx(saved['loss'], rel=1e-5)


def test_a_run_is_never_overwritten_by_accident(digits_run, capsys):
    before = {p.name: p.stat().st_mtime_ns for p in digits_run.iterdir()}
    assert train_cli.main([*FAST, '--epochs', '1', '--output-dir', str(digits_run)]) == 2
    assert 'already holds a run: pass --resume' in capsys.readouterr().err
    assert {p.name: p.stat().st_mtime_ns for p in digits_run.iterdir()} == before


def _train_process(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(ROOT / 'train.py'), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_resume_after_a_kill_ends_like_an_uninterrupted_run(tmp_path):
    args = [*FAST, '--epochs', '5', '--lr', '1e-2']  # 5 epochs: the kill lands well before the end
    whole = _train_process(*args, '--output-dir', str(tmp_path / 'whole'))
    assert whole.wait(timeout=300) == 0, whole.stdout.read()

    killed = _train_process(*args, '--output-dir', str(tmp_path / 'killed'))
    latest = tmp_path / 'killed' / 'state' / 'latest'
    deadline = time.time() + 300
    while not latest.exists() and time.time() < deadline:  # killed as soon as the first epoch is saved
        assert killed.poll() is None, 'the run ended before it could be killed'
        time.sleep(0.01)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert not (tmp_path / 'killed' / 'metrics.json').exists()
    saved = int(latest.read_text().removeprefix('epoch-'))  # what the run saved before the signal landed
    assert 1 <= saved < 5

    resumed = _train_process(*args, '--output-dir', str(tmp_path / 'killed'), '--resume')
    output = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, output
    assert 'resumed from' in output and f'after epoch {saved}' in output
    expected, got = _metrics(tmp_path / 'whole'), _metrics(tmp_path / 'killed')
    assert got['test'] == expected['test']

    def strip(history):
        return [{k: v for k, v in h.items() if k != 'seconds'} for h in history]
    assert strip(got['history']) == strip(expected['history'])
    weights = load_file(tmp_path / 'whole' / 'model.safetensors')
    for name, tensor in load_file(tmp_path / 'killed' / 'model.safetensors').items():
        assert torch.equal(tensor, weights[name]), name


def test_compile_trains_the_same_model(tmp_path, monkeypatch):
    """--compile (inductor, fullgraph) gives the losses of the eager run and saves the plain model's weights."""
    monkeypatch.setenv('TORCHINDUCTOR_CACHE_DIR', str(tmp_path / 'inductor'))  # not /tmp/torchinductor_<user>
    args = [*FAST, '--epochs', '2', '--lr', '1e-2', '--max-steps-per-epoch', '5']
    # the compiled run in a process of its own, so that its compiled code never reaches the other tests; the eager
    # run in this one (a second process would only add its imports, 5-10 s on 2 cores)
    process = _train_process(*args, '--compile', '--output-dir', str(tmp_path / 'compiled'))
    assert train_cli.main([*args, '--output-dir', str(tmp_path / 'eager')]) == 0
    assert process.wait(timeout=600) == 0, process.stdout.read()
    runs = {name: _metrics(tmp_path / name) for name in ('eager', 'compiled')}
    for eager, compiled in zip(runs['eager']['history'], runs['compiled']['history']):
        assert compiled['train_loss'] == pytest.approx(eager['train_loss'], abs=1e-4)
        assert compiled['validation_loss'] == pytest.approx(eager['validation_loss'], abs=1e-4)
    weights = load_file(tmp_path / 'compiled' / 'model.safetensors')
    assert set(weights) == set(load_file(tmp_path / 'eager' / 'model.safetensors'))  # no '_orig_mod.' prefixes


def test_two_cpu_processes_gather_the_same_metrics_as_one(tmp_path, capsys):
    """Two processes, with repeated augmentation (its sampler goes through Accelerate's sharding), test like one."""
    out = tmp_path / 'ddp'
    # Accelerate 1.15 starts one process for `--cpu --num_processes 2`; --multi_gpu starts two, on CPUs here
    launch = [sys.executable, '-m', 'accelerate.commands.launch', '--multi_gpu', '--num_processes', '2',
              '--num_machines', '1', '--mixed_precision', 'no', '--dynamo_backend', 'no',
              str(ROOT / 'train.py'), *FAST, '--epochs', '1', '--aug-repeats', '2', '--output-dir', str(out)]
    result = subprocess.run(launch, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    saved = _metrics(out)
    assert saved['environment']['num_processes'] == 2 and saved['config']['aug_repeats'] == 2
    assert saved['test']['num_samples'] == 359  # gather_for_metrics drops the padding of uneven batches
    assert train_cli.main(['--eval-only', '--pretrained', f'local-dir:{out}', '--dataset', 'digits']) == 0
    single = json.loads(capsys.readouterr().out)
    assert single['confusion_matrix'] == saved['test']['confusion_matrix']
    assert single['loss'] == pytest.approx(saved['test']['loss'], rel=1e-5)


@pytest.fixture(scope='module')
def preset_data(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp('preset-data')
    official = root / 's60_224_1k.pth'
    torch.save({'model': official_s60_state_dict(OFFICIAL_S60_KEYS)}, official)
    return dict(cifar10=write_cifar10_parquet(root / 'cifar10', num_train=40, num_test=10),
                idc=write_idc_kaggle_folder(root / 'idc'), official=official)


def _runs_alike(name: str) -> str:
    """What a run of preset `name` does apart from its numbers: its settings but --lr, and whether it decays weights
    (timm's optimizers group the parameters only for a non-zero decay, whatever its value)."""
    settings = {k: v for k, v in preset_settings(name).items() if k != 'lr'}
    return repr(sorted({**settings, 'weight_decay': bool(settings.get('weight_decay'))}.items()))


def _preset_runs() -> list:
    """Every preset with stand-in data: the first of each group that runs alike in the default run, the others
    (12 of Table IV's grid, 2 of Table I's; an S60 run on IDC is 5-8 s on 2 cores) with -m slow. What tells them
    apart, their values, is checked for every preset by test_every_preset_reaches_the_configuration."""
    names, seen = [], set()
    for name in sorted(n for n in PRESETS if PRESETS[n]['dataset'] in ('cifar10', 'idc')):
        names.append(pytest.param(name, marks=pytest.mark.slow) if _runs_alike(name) in seen else name)
        seen.add(_runs_alike(name))
    return names


def test_every_preset_reaches_the_configuration():
    """Each preset's values become the run's, and flags given with it still win."""
    for name in PRESETS:
        parsed = vars(parse_config(['--preset', name, '--epochs', '1', '--batch-size', '4']))
        expected = {**asdict(TrainConfig()), **preset_settings(name), 'epochs': 1, 'batch_size': 4}
        assert {key: parsed[key] for key in expected} == expected, name


@pytest.mark.parametrize('name', _preset_runs())
def test_every_preset_runs_a_few_steps(name, preset_data, tmp_path):
    """Each preset on stand-in data (official-in1k's ImageNet has none: its settings are checked at import)."""
    preset = PRESETS[name]
    args = ['--preset', name, '--data-dir', str(preset_data[preset['dataset']]), '--epochs', '1',
            '--max-steps-per-epoch', '2', '--batch-size', '4', '--output-dir', str(tmp_path)]
    if preset.get('pretrained'):  # offline: the official file instead of its download
        args += ['--pretrained', str(preset_data['official'])]
    assert train_cli.main(args) == 0
    metrics = _metrics(tmp_path)
    expected = {**asdict(TrainConfig()), **preset}
    for key in ('model', 'opt', 'lr', 'weight_decay', 'dataset', 'patience', 'mixup', 'model_ema', 'layer_decay'):
        assert metrics['config'][key] == expected[key]
    assert metrics['config']['epochs'] == 1 and metrics['config']['batch_size'] == 4
    # the data set, not the model's default weights, decides the input size
    size = preset.get('img_size') or {'cifar10': 32, 'idc': 50}[preset['dataset']]
    assert json.loads((tmp_path / 'config.json').read_text())['pretrained_cfg']['input_size'] == [3, size, size]
    if preset['dataset'] == 'idc':
        assert metrics['data']['patient_level'] and metrics['data']['skipped_images'] == 1
        assert {'sensitivity', 'specificity', 'roc_auc', 'balanced_accuracy', 'f1'} <= set(metrics['test'])
    shutil.rmtree(tmp_path)  # an S60 model and its optimizer state: 390 MB for each of the presets


@pytest.mark.parametrize('args, message', [
    (['--dataset', 'mnist'], "'digits', 'cifar10', 'idc'"),
    (['--dataset', 'digits', '--model', 'patchconvnet_s61'], 'Unknown model'),
    (['--dataset', 'idc', '--data-dir', '/no/such/folder'], 'does not exist'),
    (['--dataset', 'digits', '--batch-size', '5000'], 'larger than the 1258 training images'),
    (['--dataset', 'digits', '--num-classes', '3'], '--num-classes 3 does not match the data, which has 10'),
    (['--dataset', 'digits', '--opt', 'sgd', '--lr', '1e30', '--model', 'patchconvnet_test_p4'], 'not finite'),
    (['--resume', '--dataset', 'digits'], 'Nothing to resume'),
    (['--eval-only', '--dataset', 'digits'], '--eval-only needs --pretrained'),
    (['--dataset', 'digits', '--model', 'resnet18', '--class-tokens', 'per_class'],
     '--class-tokens per_class needs a PatchConvNet model (patchconvnet_*), not resnet18'),
])
def test_bad_input_is_a_clear_error(args, message, tmp_path, capsys):
    assert train_cli.main([*args, '--output-dir', str(tmp_path / 'out')]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / 'out' / 'metrics.json').exists()


def test_a_channels_last_model_is_saved_in_the_default_layout(tmp_path):
    """Training on CUDA makes the model channels-last; safetensors refuses such strided weights."""
    from timm_patchconvnet.model_folder import save_model_folder
    model = timm.create_model('patchconvnet_test_p4', num_classes=3).to(memory_format=torch.channels_last)
    save_model_folder(model, tmp_path, ['a', 'b', 'c'])
    saved = load_file(tmp_path / 'model.safetensors')
    assert all(torch.equal(saved[name], tensor) for name, tensor in model.state_dict().items())
    assert model.stem.conv1.weight.is_contiguous(memory_format=torch.channels_last)  # as it was


def test_folder_errors(tmp_path, capsys):
    (tmp_path / 'empty').mkdir()
    assert train_cli.main(['--dataset', 'idc', '--data-dir', str(tmp_path / 'empty')]) == 2
    assert 'is empty' in capsys.readouterr().err
    write_idc_patients(tmp_path / 'negative', {str(p): (3, 0) for p in range(1, 7)})
    assert train_cli.main(['--dataset', 'idc', '--data-dir', str(tmp_path / 'negative')]) == 2
    assert 'only one class' in capsys.readouterr().err


def test_pretrained_head_size_must_be_asked_for(digits_run, tmp_path, capsys):
    idc = write_idc_kaggle_folder(tmp_path / 'idc')
    base = ['--dataset', 'idc', '--data-dir', str(idc), '--pretrained', f'local-dir:{digits_run}',
            '--epochs', '1', '--max-steps-per-epoch', '1', '--batch-size', '8']
    assert train_cli.main([*base, '--output-dir', str(tmp_path / 'a')]) == 2
    assert 'has 10 classes and the data 2: pass --num-classes 2' in capsys.readouterr().err
    assert train_cli.main([*base, '--num-classes', '2', '--output-dir', str(tmp_path / 'b')]) == 0
    assert json.loads((tmp_path / 'b' / 'config.json').read_text())['num_classes'] == 2


def test_tensorboard_tracking(tmp_path):
    assert train_cli.main([*FAST, '--epochs', '1', '--max-steps-per-epoch', '2', '--report-to', 'tensorboard',
                           '--output-dir', str(tmp_path)]) == 0
    assert list(tmp_path.glob('patchconvnet/events.out.tfevents.*'))


def test_a_single_threaded_cpu_run_says_how_to_use_every_core(tmp_path, capsys, monkeypatch):
    if (os.cpu_count() or 1) < 2:
        pytest.skip('one CPU: nothing to say')
    monkeypatch.setattr(torch, 'get_num_threads', lambda: 1)
    assert train_cli.main([*FAST, '--epochs', '1', '--max-steps-per-epoch', '1', '--output-dir', str(tmp_path)]) == 0
    assert '--num_cpu_threads_per_process' in capsys.readouterr().out


def test_per_class_tokens_train_reload_and_transfer(digits_run, tmp_path, capsys):
    """--class-tokens per_class: one token and map per class, from scratch and from single-token weights."""
    from timm_patchconvnet import get_attention_map
    scratch = tmp_path / 'scratch'
    assert train_cli.main([*FAST, '--class-tokens', 'per_class', '--epochs', '15', '--lr', '1e-2', '--sched',
                           'constant', '--output-dir', str(scratch)]) == 0  # 6 s
    metrics = _metrics(scratch)
    assert metrics['history'][-1]['validation_loss'] < metrics['history'][0]['validation_loss']
    assert metrics['test']['accuracy'] > 0.5 and metrics['config']['class_tokens'] == 'per_class'  # chance 0.1; 0.89
    assert '--class-tokens per_class' in public_command(metrics['config'])  # the model card's command
    model = timm.create_model(f'local-dir:{scratch}', pretrained=True).eval()
    assert model.class_tokens == 'per_class' and model.cls_token.shape[1] == 10
    maps = [get_attention_map(model, torch.rand(1, 3, 32, 32), class_index=c) for c in (3, 7)]
    assert not torch.allclose(maps[0], maps[1])  # each class has its own map

    # over the single-token run's weights: the same trunk, its one token copied to each class
    from timm_patchconvnet.training import create_training_model
    saved = load_file(digits_run / 'model.safetensors')
    transfer = create_training_model(TrainConfig(pretrained=f'local-dir:{digits_run}', class_tokens='per_class'), 10)
    assert transfer.class_tokens == 'per_class' and transfer.cls_token.shape[1] == 10
    assert torch.equal(transfer.cls_token, saved['cls_token'].expand(-1, 10, -1))
    assert all(torch.equal(transfer.state_dict()[k], v) for k, v in saved.items() if k.startswith(('stem', 'blocks')))

    idc = write_idc_kaggle_folder(tmp_path / 'idc')
    base = ['--dataset', 'idc', '--data-dir', str(idc), '--num-classes', '2', '--epochs', '1',
            '--max-steps-per-epoch', '1', '--batch-size', '8']
    # unset, the pretrained model keeps its tokens; set, they are fitted: per-class back to one, averaged
    assert train_cli.main([*base, '--pretrained', f'local-dir:{scratch}', '--output-dir', str(tmp_path / 'as')]) == 0
    assert timm.create_model(f'local-dir:{tmp_path / "as"}').cls_token.shape[1] == 2
    assert train_cli.main([*base, '--pretrained', f'local-dir:{scratch}', '--class-tokens', 'single',
                           '--output-dir', str(tmp_path / 'single')]) == 0
    single = timm.create_model(f'local-dir:{tmp_path / "single"}')
    assert single.class_tokens == 'single' and single.cls_token.shape[1] == 1
    # --eval-only takes the model as saved: a flag that would change it is refused
    assert train_cli.main(['--eval-only', '--dataset', 'digits', '--pretrained', f'local-dir:{scratch}',
                           '--class-tokens', 'single']) == 2
    assert 'drop --class-tokens' in capsys.readouterr().err
