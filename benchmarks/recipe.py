"""The strong-training parts (issue 27) on the decoded loader: their cost per training step, and the loader with
--auto-augment's policies on the device.

    python benchmarks/recipe.py --cifar10 cifar10/              # CPU
    python benchmarks/recipe.py --cifar10 cifar10/ --device cuda --mixed-precision bf16

`--cifar10` is a copy of the Hub's parquet files (50k + 10k; `make-standin-data cifar10` writes a stand-in). The
step is `training/loop.py`'s `train_step` on what the loop's own setup builds, with `cifar10-strong`'s parts on
(Mixup/CutMix, RandAugment on the device, random erasing, EMA, clipping, label smoothing, drop-path) or all off,
at batch 64; the rounds alternate the order (on, off, off, on, ...), each measurement a fresh process
(`data.run`). The loader rows are `data.py`'s `loader` worker with each policy, in rounds of alternating order.
Prints one markdown table.
"""
import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's package, and benchmarks/data.py
from benchmarks.benchmark import positive_int  # noqa: E402
from benchmarks.data import answer, run  # noqa: E402
from timm_patchconvnet.config import AUTO_AUGMENT_POLICIES, TrainConfig  # noqa: E402
from timm_patchconvnet.training.presets import preset_settings  # noqa: E402

PRESET = 'cifar10-strong'
# cifar10-strong's parts; "off" sets each to TrainConfig's default (the preset's optimizer and schedule stay)
PARTS = ('mixup', 'cutmix', 'auto_augment', 'reprob', 'model_ema', 'clip_grad', 'label_smoothing', 'drop_path')


def step_config(args: Dict[str, Any]) -> TrainConfig:
    """`PRESET` at `args`' model and batch size on the decoded loader, with its parts on or all off."""
    settings = dict(preset_settings(PRESET), data_dir=args['data_dir'], model=args['model'],
                    batch_size=args['batch_size'], loader='decoded', cache_dir=args['cache'],
                    mixed_precision=args['mixed_precision'])
    if not args['parts']:
        default = TrainConfig()
        settings.update({name: getattr(default, name) for name in PARTS})
    return TrainConfig(**settings)


def _timed(work: Callable[[], Any], repeats: int, sync: Callable[[], None]) -> float:
    """Milliseconds per call of `work`."""
    sync()
    started = time.perf_counter()
    for _ in range(repeats):
        work()
    sync()
    return (time.perf_counter() - started) / repeats * 1e3


def _part_milliseconds(setup: Dict[str, Any], batches: Iterator, repeats: int,
                       sync: Callable[[], None]) -> Dict[str, float]:
    """Each part alone on one batch of the loader, as the step calls it: the policy on the augmented [0, 1] batch,
    erasing and mixing on the normalised one, clipping of real gradients, one EMA update."""
    import torch
    accelerator, model, recipe = setup['accelerator'], setup['model'], setup['recipe']
    images, targets = next(batches)
    policy_input = images.float().div(255)  # the policy's input: the data set's recipe is on in both settings
    x = setup['preprocess'](images, train=True)
    mixed, soft = recipe.mixup(x.clone(), targets)
    accelerator.backward(setup['criterion'](model(mixed), soft))  # real gradients for the clipping to measure
    parts = dict(auto_augment=lambda: setup['preprocess'].policy(policy_input),
                 erasing=lambda: recipe.erase(x.clone()), mixup=lambda: recipe.mixup(x.clone(), targets),
                 clip=lambda: recipe.clip(accelerator, model), ema=lambda: recipe.update_ema(setup['plain']))
    with torch.no_grad():
        return {name: _timed(work, repeats, sync) for name, work in parts.items()}


def _setup(args: Dict[str, Any]) -> Dict[str, Any]:
    """What `train` builds before its epochs (`loop.prepare_training`), for `step_config(args)` on one process."""
    from accelerate.utils import set_seed
    from timm_patchconvnet.training import loop
    cfg = step_config(args)
    accelerator = loop._accelerator(cfg)
    set_seed(cfg.seed)
    run = loop.prepare_training(cfg, accelerator, loop._load_data(cfg))
    run.train_loader.set_epoch(0)
    run.model.train()
    return dict(accelerator=accelerator, model=run.model, plain=run.trained, optimizer=run.optimizer,
                scheduler=run.scheduler, criterion=run.recipe.criterion(), recipe=run.recipe,
                preprocess=run.loaders.preprocess, loader=run.train_loader)


def worker_step(args: Dict[str, Any]) -> Dict[str, Any]:
    """Seconds per training step (`loop.train_step`: data, augmentation, loss, backward, clipping, optimizer, EMA)
    with the parts on or off; with them on, each part alone in milliseconds."""
    import torch
    from timm_patchconvnet.training.loop import train_step
    setup = _setup(args)
    step_parts = [setup[name] for name in ('accelerator', 'model', 'plain', 'optimizer', 'scheduler', 'criterion',
                                           'recipe', 'preprocess')]
    sync = torch.cuda.synchronize if setup['accelerator'].device.type == 'cuda' else (lambda: None)
    batches = iter(setup['loader'])
    for step in range(args['warmup'] + args['steps']):
        if step == args['warmup']:
            sync()
            started, cpu_started = time.perf_counter(), time.process_time()
        loss = train_step(*step_parts, *next(batches))
    sync()
    result = dict(parts=args['parts'], step_seconds=(time.perf_counter() - started) / args['steps'],
                  cpu_seconds=(time.process_time() - cpu_started) / args['steps'], loss=loss.item(),
                  threads=torch.get_num_threads())
    if args['parts']:
        result['part_ms'] = _part_milliseconds(setup, batches, args['part_repeats'], sync)
    return result


WORKERS = dict(step=worker_step)


def _step_rounds(args: argparse.Namespace, common: Dict[str, Any]) -> Tuple[List[dict], List[dict]]:
    """(on, off) results of `args.rounds` rounds, alternating which runs first."""
    results: Dict[bool, List[dict]] = {True: [], False: []}
    step = dict(common, model=args.model, steps=args.steps, warmup=args.warmup, part_repeats=args.part_repeats)
    for index in range(args.rounds):
        for parts in ((True, False) if index % 2 == 0 else (False, True)):
            results[parts].append(run('step', script=__file__, **step, parts=parts))
    return results[True], results[False]


def _loader_rounds(args: argparse.Namespace, common: Dict[str, Any]) -> Dict[str, List[float]]:
    """Each policy's loader img/s in `args.loader_rounds` rounds, the policies' order reversed every other round."""
    results: Dict[str, List[float]] = {policy: [] for policy in AUTO_AUGMENT_POLICIES}
    for index in range(args.loader_rounds):
        for policy in AUTO_AUGMENT_POLICIES[::1 if index % 2 == 0 else -1]:
            result = run('loader', **common, model=args.model, loader='decoded', auto_augment=policy,
                         images=args.loader_images)
            results[policy].append(result['images_per_second'])
    return results


def _rows(args: argparse.Namespace, loader: Dict[str, List[float]], on: List[dict], off: List[dict]) -> List[tuple]:
    plain = statistics.median(loader['none'])
    rows = [(f'decoded loader img/s at 32 px, --auto-augment {policy}', f'{statistics.median(rates):,.0f}',
             f'median of {len(rates)} rounds (lowest {min(rates):,.0f}, highest {max(rates):,.0f}); ' +
             ('the CIFAR-10 recipe only' if policy == 'none' else
              f'{statistics.median(rates) / plain:.0%} of the recipe alone'))
            for policy, rates in loader.items()]
    ratios = [a['step_seconds'] / b['step_seconds'] for a, b in zip(on, off)]
    for index, (a, b, ratio) in enumerate(zip(on, off, ratios)):
        rows.append((f'{args.model} step, round {index + 1}: parts on / off', f'{a["step_seconds"]:.3f} / '
                     f'{b["step_seconds"]:.3f} s', f'{ratio - 1:+.1%}; CPU time of the process per step '
                     f'{a["cpu_seconds"]:.3f} / {b["cpu_seconds"]:.3f} s'))
    on_median, off_median = (statistics.median(r['step_seconds'] for r in results) for results in (on, off))
    rows.append((f'{args.model} step, median of {args.rounds} rounds: parts on / off',
                 f'{on_median:.3f} / {off_median:.3f} s', f'{on_median / off_median - 1:+.1%} (median of the '
                 f'rounds\' ratios {statistics.median(ratios) - 1:+.1%}); {args.steps} timed steps per process'))
    parts = {name: statistics.median(r['part_ms'][name] for r in on) for name in on[0]['part_ms']}
    explained = sum(parts.values())
    rows.append(('the parts alone, ms per step (median over the "on" rounds)',
                 ', '.join(f'{name} {ms:.1f}' for name, ms in parts.items()),
                 f'together {explained:.0f} ms, {explained / 1e3 / off_median:.1%} of a step without them; the '
                 f'medians differ by {(on_median - off_median) * 1e3:.0f} ms (the rest not split further)'))
    return rows


def main(argv: List[str] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--cifar10', help="a copy of the Hub's CIFAR-10 parquet files (required)")
    parser.add_argument('--model', default='patchconvnet_s60_p4')
    parser.add_argument('--device', default='cpu', help="the loader rows' device (the steps run where train's "
                        'Accelerator puts them: a GPU when there is one)')
    parser.add_argument('--mixed-precision', default='no', choices=('no', 'bf16'))
    parser.add_argument('--cache-dir', help='the decoded cache (default: a temporary folder, removed at the end)')
    parser.add_argument('--rounds', type=positive_int, default=4,
                        help='rounds of one step measurement with the parts on and one off')
    parser.add_argument('--steps', type=positive_int, default=15, help='timed training steps per measurement')
    parser.add_argument('--warmup', type=int, default=2, help='untimed steps before them')
    parser.add_argument('--part-repeats', type=positive_int, default=5, help='calls of each part timed alone')
    parser.add_argument('--loader-images', type=positive_int, default=20_000, help='images per loader measurement')
    parser.add_argument('--loader-rounds', type=positive_int, default=3,
                        help='rounds of one loader measurement per policy')
    parser.add_argument('--worker', nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return answer(WORKERS, args.worker)
    if not args.cifar10:
        parser.error('--cifar10 is required')
    cache = args.cache_dir or tempfile.mkdtemp(prefix='patchconvnet-recipe-bench-')
    common = dict(device=args.device, cache=cache, batch_size=64, mixed_precision=args.mixed_precision,
                  dataset='cifar10', data_dir=args.cifar10)
    try:
        loader = _loader_rounds(args, common)
        on, off = _step_rounds(args, common)
    finally:
        if not args.cache_dir:
            shutil.rmtree(cache, ignore_errors=True)
    print(f'{args.device}, mixed precision {args.mixed_precision}, batch 64, {PRESET}\'s parts, torch threads '
          f'{on[0]["threads"]}\n')
    print('| measurement | result | notes |\n|---|---|---|')
    for row in _rows(args, loader, on, off):
        print('| ' + ' | '.join(row) + ' |')


if __name__ == '__main__':
    main()
