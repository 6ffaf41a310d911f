"""benchmarks/benchmark.py: a real tiny run's table, its bookkeeping, its option checks and the official path;
benchmarks/recipe.py's table on tiny data.

The official tests need a checkout of github.com/facebookresearch/deit: set DEIT_CHECKOUT to its folder (without
it they are deselected, see conftest.py).
"""
import json
import mmap
import subprocess
import sys
import warnings
from dataclasses import asdict

import pytest
import timm
import torch
from conftest import ROOT

from benchmarks import benchmark, recipe
from timm_patchconvnet.config import AUTO_AUGMENT_POLICIES

SCRIPT = ROOT / 'benchmarks' / 'benchmark.py'
TINY = ['--models', 'patchconvnet_test_p4', '--train-model', 'patchconvnet_test_p4', '--img-size', '32',
        '--batch-size', '4', '--train-img-size', '32', '--train-batch-size', '4', '--warmup', '1', '--iters', '2']


def _run(*options: str) -> str:
    done = subprocess.run([sys.executable, str(SCRIPT), *options], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _table(stdout: str) -> tuple[list[str], list[dict]]:
    """Headers and rows (header -> cell) of the markdown table in the report."""
    lines = [line for line in stdout.splitlines() if line.startswith('|')]
    headers = [cell.strip() for cell in lines[0].strip('|').split('|')]
    rows = [dict(zip(headers, (cell.strip() for cell in line.strip('|').split('|')))) for line in lines[2:]]
    return headers, rows


def _params_m(name: str, num_classes: int) -> str:
    with torch.device('meta'):
        model = timm.create_model(name, num_classes=num_classes)
    return f'{sum(p.numel() for p in model.parameters()) / 1e6:.2f}'


def test_tiny_run_prints_the_table_and_the_json(tmp_path):
    """Both parts; inference eager, fused and through onnxruntime (the ONNX file exported once, its logits checked
    against the eager model's before timing) in the same alternating rounds, each compared with eager."""
    out = tmp_path / 'raw.json'
    stdout = _run(*TINY, '--repeats', '1', '--grad-checkpointing', '--runtimes', 'eager', 'fused', 'onnxruntime',
                  '--json', str(out))

    headers, rows = _table(stdout)
    assert headers == ['model', 'input', 'classes', 'params (M)', 'GMACs', 'eval img/s @4', 'latency ms @1',
                       'train img/s @4', 'peak train mem (MiB)', 'saved activations (MiB)', 'page faults /iter',
                       'vs resnet50', 'vs eager']
    assert [(r['model'], r['classes']) for r in rows] == [
        ('patchconvnet_test_p4', '1000'), ('patchconvnet_test_p4 (fused)', '1000'),
        ('patchconvnet_test_p4 (onnxruntime)', '1000'), ('resnet50', '1000'),
        ('patchconvnet_test_p4', '10'), ('patchconvnet_test_p4 + grad checkpointing', '10'), ('resnet50', '10')]
    eval_rows, train_rows = rows[:4], rows[4:]
    for row in rows:
        assert row['input'] == '32' and float(row['GMACs']) > 0
        assert row['params (M)'] == _params_m(row['model'].split(' ')[0], int(row['classes']))  # before fusing
        assert float(row['page faults /iter']) >= 0
    for row in eval_rows:
        assert float(row['eval img/s @4']) > 0 and float(row['latency ms @1']) > 0
        assert row['train img/s @4'] == row['peak train mem (MiB)'] == row['saved activations (MiB)'] == '-'
    for row in train_rows:
        assert row['eval img/s @4'] == row['latency ms @1'] == '-'
        for column in ('train img/s @4', 'peak train mem (MiB)', 'saved activations (MiB)'):
            assert float(row[column]) > 0, (row['model'], column)
    for row in rows:
        assert (row['vs resnet50'] == '-') == (row['model'] == 'resnet50')
        assert (row['vs eager'] == '-') == (row['model'] not in {'patchconvnet_test_p4 (fused)',
                                                                 'patchconvnet_test_p4 (onnxruntime)'})
    plain, checkpointed = (float(r['saved activations (MiB)']) for r in train_rows[:2])
    assert checkpointed < plain
    assert 'max |ours - official|' not in stdout and 'device: cpu' in stdout
    assert 'our models run eager, fused, onnxruntime' in stdout
    assert 'patchconvnet_test_p4 (onnxruntime): exported once by timm_patchconvnet.export_onnx' in stdout

    raw = json.loads(out.read_text())
    assert [r['model'] for r in raw['rows']] == [r['model'] for r in rows]
    assert all(len(r['results']) == 1 for r in raw['rounds'])
    assert raw['settings']['grad_checkpointing'] and raw['environment']['torch'] == torch.__version__
    (check,) = raw['onnx']  # onnxruntime against eager, on the weights every worker builds (seed 0)
    assert check['max_abs_diff'] <= benchmark.PARITY_TOL and check['max_abs_output'] > 0.1
    assert raw['environment']['onnxruntime'] and raw['settings']['runtimes'] == ['eager', 'fused', 'onnxruntime']


def _fake_worker(calls: list, speeds: dict):
    def run_in_worker(argv, args, job):
        entry = benchmark.Entry(**job['entry'])
        calls.append((entry.label, job['count_saved']))
        speed = speeds[entry.label][sum(label == entry.label for label, _ in calls) - 1]
        return {'train_img_s': speed, 'peak_train_mib': 1.0, 'saved_mib': 1.0, 'device_name': 'cpu'}
    return run_in_worker


def test_rounds_alternate_the_order_and_count_saved_activations_once(monkeypatch):
    args = benchmark.parse_args([*TINY, '--repeats', '3', '--grad-checkpointing'])
    entries = benchmark.plan_part('train', [args.train_model], args)
    labels = [e.label for e in entries]
    assert labels == ['patchconvnet_test_p4', 'patchconvnet_test_p4 + grad checkpointing', 'resnet50']
    calls = []
    monkeypatch.setattr(benchmark, 'run_in_worker', _fake_worker(calls, {label: [1.0] * 3 for label in labels}))
    benchmark.run_rounds([], args, entries)
    assert [label for label, _ in calls] == labels + labels[::-1] + labels
    assert [saved for _, saved in calls] == [True] * 3 + [False] * 6


def test_speed_ratios_are_taken_within_each_round(monkeypatch):
    args = benchmark.parse_args([*TINY, '--repeats', '3'])
    entries = benchmark.plan_part('train', [args.train_model], args)
    # Per-round ratios 2, 3 and 1 (median 2); the ratio of the medians would be 30 / 10 = 3.
    speeds = {'patchconvnet_test_p4': [10.0, 30.0, 100.0], 'resnet50': [5.0, 10.0, 100.0]}
    monkeypatch.setattr(benchmark, 'run_in_worker', _fake_worker([], speeds))
    results = benchmark.run_rounds([], args, entries)
    # The order flips between rounds (A B, B A, A B), but each entry's results stay in round order.
    assert [r['train_img_s'] for r in results[entries[0]]] == speeds['patchconvnet_test_p4']
    ours, baseline = benchmark.make_rows(results, {entry: (1.0, 1.0) for entry in entries})
    assert ours['vs_baseline'] == pytest.approx(2.0) and ours['train_img_s'] == 30.0
    assert baseline['vs_baseline'] is None and ours['vs_official'] is None and ours['best_vs_official'] is None


def test_best_rounds_are_compared_with_best_rounds():
    rounds = [{'eval_img_s': speed} for speed in (10.0, 18.0, 17.0)]
    official = [{'eval_img_s': speed} for speed in (9.0, 15.0, 12.0)]  # one round slowed down by other work
    assert benchmark.best_ratio(rounds, official, 'eval_img_s') == pytest.approx(18.0 / 15.0)


def test_page_faults_of_fresh_memory_are_counted():
    size = 64 << 20
    with benchmark.KernelWork() as kernel:
        # fresh anonymous pages, each touched: they fault in whatever memory the process freed before (a tensor of
        # this size may reuse an arena that earlier tests left, and fault nothing)
        fresh = mmap.mmap(-1, size)
        for offset in range(0, size, 4096):
            fresh[offset] = 1
        fresh.close()
    with benchmark.KernelWork() as idle:
        pass
    # at least one fault per 2 MiB, whether the kernel maps 4 KiB pages or transparent huge pages
    assert kernel.per_iter(1)['page_faults'] >= 32 > idle.per_iter(1)['page_faults']
    assert kernel.per_iter(2)['page_faults'] == kernel.per_iter(1)['page_faults'] / 2


def test_saved_activations_are_exact_and_include_checkpoint_inputs():
    model = timm.create_model('patchconvnet_test_p4', num_classes=10).train()
    images = torch.randn(4, 3, 32, 32)
    no_autocast = torch.autocast('cpu', enabled=False)
    plain = benchmark.saved_activation_bytes(model, images, no_autocast)
    assert plain == benchmark.saved_activation_bytes(model, images, no_autocast)
    model.set_grad_checkpointing(True)
    checkpointed = benchmark.saved_activation_bytes(model, images, no_autocast)
    block_inputs = len(model.blocks) * 4 * 48 * 8 * 8 * 4  # checkpointing keeps each block's float32 input
    assert block_inputs < checkpointed < plain


@pytest.mark.parametrize('options, message', [
    (['--official', '{tmp}'], 'no patchconvnet_models.py there'),
    (['--official', '{tmp_with_file}'], 'has an official counterpart'),
    (['--only', 'eval', '--grad-checkpointing'], 'belong to the training part'),
    (['--only', 'eval', '--epoch'], 'belong to the training part'),
    (['--only', 'train', '--fuse'], 'belong to the inference part'),
    (['--only', 'train', '--runtimes', 'onnxruntime'], 'belong to the inference part'),
    (['--fuse', '--runtimes', 'eager'], '--fuse is --runtimes fused'),
    (['--runtimes', 'onnxruntime', '--dtype', 'bfloat16'], 'runs float32 on the CPU'),
    (['--runtimes', 'bf16', 'int8', '--dtype', 'bfloat16'], 'run on the CPU from float32 inputs'),
    (['--runtimes', 'tensorrt'], "invalid choice: 'tensorrt'"),
    (['--models', 'no_such_model'], 'no_such_model is not a timm model'),
    (['--repeats', '0'], 'not a positive integer'),
    (['--json', '{tmp}/missing/raw.json'], 'its folder does not exist'),
])
def test_bad_options_are_refused_with_a_reason(options, message, tmp_path, capsys):
    (tmp_path / 'deit').mkdir()
    (tmp_path / 'deit' / benchmark.OFFICIAL_FILE).write_text('')
    options = [o.format(tmp=tmp_path, tmp_with_file=tmp_path / 'deit') for o in options]
    with pytest.raises(SystemExit):
        benchmark.parse_args([*TINY, *options])
    assert message in capsys.readouterr().err


def test_fuse_times_the_reparameterized_model_in_the_inference_part_only():
    args = benchmark.parse_args([*TINY, '--fuse'])
    (inference, _), (training, _) = (benchmark.plan_part(part, ['patchconvnet_test_p4'], args)
                                     for part in ('eval', 'train'))
    assert inference.label == 'patchconvnet_test_p4 (fused)' and training.label == 'patchconvnet_test_p4'
    inference = benchmark.Bench(inference, args)
    assert type(inference.model.blocks[0]).__name__ == 'FusedConvBlock' and not inference.model.training
    assert inference.measure_eval()['eval_img_s'] > 0
    training = benchmark.Bench(training, args)
    assert type(training.model.blocks[0]).__name__ == 'ConvBlock'


def test_the_bf16_row_is_the_model_optimized_once_in_bf16():
    from timm_patchconvnet.precision import detect_hardware, unsupported_reason

    reason = unsupported_reason('bf16', detect_hardware('cpu'))
    if reason:  # the option is then refused, as test_bad_options_are_refused_with_a_reason checks for others
        pytest.skip(f'fast path not exercised: {reason}')
    args = benchmark.parse_args([*TINY, '--only', 'eval', '--runtimes', 'bf16'])
    (entry, _) = benchmark.plan_part('eval', ['patchconvnet_test_p4'], args)
    bench = benchmark.Bench(entry, args)
    assert entry.label == 'patchconvnet_test_p4 (bf16)' and bench.model.precision == 'bf16'
    assert bench.measure_eval()['eval_img_s'] > 0


def test_onnxruntime_rows_need_the_onnx_extra(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, 'onnxruntime', None)  # as if it were not installed
    with pytest.raises(SystemExit):
        benchmark.parse_args([*TINY, '--runtimes', 'onnxruntime'])
    assert "needs onnxruntime: pip install 'timm-patchconvnet[onnx]'" in capsys.readouterr().err


def test_a_failing_worker_is_reported_with_its_error():
    args = benchmark.parse_args(TINY)
    job = {'task': 'eval', 'entry': {'implementation': 'ours', 'name': 'no_such_model', 'part': 'eval', 'img_size': 32}}
    with pytest.raises(benchmark.BenchmarkError, match='no_such_model: the eval worker failed'):
        benchmark.run_in_worker(TINY, args, job)


def test_the_recipe_benchmark_turns_every_part_of_cifar10_strong_off_and_nothing_else():
    common = dict(data_dir='cifar10', model='patchconvnet_s60_p4', batch_size=64, cache=None, mixed_precision='no')
    on, off = (asdict(recipe.step_config(dict(common, parts=parts))) for parts in (True, False))
    assert sorted(name for name in on if on[name] != off[name]) == sorted(recipe.PARTS)
    assert (off['mixup'], off['cutmix'], off['reprob'], off['label_smoothing'], off['drop_path']) == (0, 0, 0, 0, 0)
    assert (off['auto_augment'], off['model_ema'], off['clip_grad']) == ('none', False, None)
    assert on['auto_augment'] == 'rand-m9-mstd0.5-inc1' and on['model_ema'] and on['batch_size'] == 64


@pytest.mark.slow  # five fresh processes: about a minute of CPU
def test_recipe_benchmark_times_the_loops_step_with_the_parts_on_and_off(tmp_path):
    """benchmarks/recipe.py on tiny CIFAR-10 data and the test model: the loader with each policy, one round of the
    loop's step with cifar10-strong's parts on and off, and each part timed alone."""
    from datagen import write_cifar10_parquet  # the train extra's datasets: only this test needs it
    data = write_cifar10_parquet(tmp_path / 'cifar10', num_train=300)
    done = subprocess.run([sys.executable, str(ROOT / 'benchmarks' / 'recipe.py'), '--cifar10', str(data),
                           '--model', 'patchconvnet_test_p4', '--cache-dir', str(tmp_path / 'cache'), '--rounds', '1',
                           '--steps', '1', '--warmup', '1', '--part-repeats', '1', '--loader-images', '64',
                           '--loader-rounds', '1'],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    _, rows = _table(done.stdout)
    loader, steps = rows[:len(AUTO_AUGMENT_POLICIES)], rows[len(AUTO_AUGMENT_POLICIES):]
    assert tuple(r['measurement'].split('--auto-augment ')[1] for r in loader) == AUTO_AUGMENT_POLICIES
    assert all(float(r['result'].replace(',', '')) > 0 for r in loader)
    on, off = (float(t) for t in steps[0]['result'].removesuffix(' s').split(' / '))
    assert on > 0 and off > 0 and steps[0]['measurement'].endswith('round 1: parts on / off')
    parts = dict(part.rsplit(' ', 1) for part in steps[2]['result'].split(', '))
    assert sorted(parts) == ['auto_augment', 'clip', 'ema', 'erasing', 'mixup']
    assert all(float(ms) > 0 for ms in parts.values())
    assert "cifar10-strong's parts, torch threads" in done.stdout


# ---------------------------------------------------------------------------------------------------------------
# The official implementation


# deit_checkout: the opt-in checkout of facebookresearch/deit (conftest.py); these tests are deselected without it


def test_importing_the_official_file_leaves_timm_as_it_was(deit_checkout):
    names = ('timm.models.layers', 'timm.models.registry', 'timm.models.efficientnet_blocks')
    before = {name: sys.modules.get(name) for name in names}
    registered = set(timm.list_models())
    benchmark.load_official.cache_clear()
    with warnings.catch_warnings():
        warnings.simplefilter('error', FutureWarning)  # no import through timm's deprecated paths
        module = benchmark.load_official(deit_checkout)
    assert {name: sys.modules.get(name) for name in names} == before
    assert set(timm.list_models()) == registered and module.__name__ not in sys.modules
    assert callable(module.S60)


@pytest.mark.parametrize('name, img_size', [
    ('patchconvnet_s60_p16', 32), ('patchconvnet_s60_p8', 32), ('patchconvnet_s60_p4', 32),
    ('patchconvnet_s60_multi_p16', 32),
])
def test_ours_matches_the_official_model_on_its_weights(deit_checkout, name, img_size):
    args = benchmark.parse_args(['--official', deit_checkout, '--train-model', name])
    ctor, patch = benchmark.official_counterpart(name)
    ours = benchmark.Entry('ours', name, 'train', img_size)
    official = benchmark.Entry('official', ctor, 'train', img_size, patch=patch)
    check = benchmark.check_parity(ours, official, args)
    assert check['max_abs_diff'] <= 1e-5 and check['max_abs_output'] > 0.1
    assert benchmark.count_params_and_macs(ours, None) == benchmark.count_params_and_macs(official, deit_checkout)


def test_parity_catches_a_wrong_stem(deit_checkout):
    args = benchmark.parse_args(['--official', deit_checkout])
    ours = benchmark.Entry('ours', 'patchconvnet_s60_p4', 'train', 32)
    official_p16 = benchmark.Entry('official', 'S60', 'train', 32, patch=16)
    with pytest.raises(benchmark.BenchmarkError, match='disagree'):
        benchmark.check_parity(ours, official_p16, args)


def test_official_run_prints_parity_and_ratios(deit_checkout):
    stdout = _run('--official', deit_checkout, '--only', 'eval', '--img-size', '32', '--batch-size', '2',
                  '--repeats', '1', '--warmup', '1', '--iters', '1')
    assert 'max |ours - official| (patchconvnet_s60_p16 vs official S60, 32x32' in stdout
    headers, rows = _table(stdout)
    assert headers[-3:] == ['vs official', 'best vs best official', 'vs resnet50']
    assert 'train img/s @64' not in headers
    ours, official, resnet = rows
    assert (ours['model'], official['model'], resnet['model']) == ('patchconvnet_s60_p16', 'official S60', 'resnet50')
    assert ours['params (M)'] == official['params (M)'] and ours['GMACs'] == official['GMACs']
    assert float(ours['vs official']) > 0 and official['vs official'] == '-'
    assert float(ours['best vs best official']) > 0 and official['best vs best official'] == '-'
    assert float(official['vs resnet50']) > 0


def test_official_training_step_is_measured_like_ours(deit_checkout):
    """The training worker's measurement, in this process, for the official /4 model and ours."""
    args = benchmark.parse_args(['--official', deit_checkout, '--train-batch-size', '2', '--warmup', '1',
                                 '--iters', '1', '--threads', str(torch.get_num_threads())])
    for entry in (benchmark.Entry('official', 'S60', 'train', 32, patch=4),
                  benchmark.Entry('ours', 'patchconvnet_s60_p4', 'train', 32)):
        result = benchmark.Bench(entry, args).measure_train(count_saved=True)
        assert result['train_img_s'] > 0 and result['peak_train_mib'] > 0 and result['saved_mib'] > 0, entry
