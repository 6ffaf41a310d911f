"""The data path at full size: the decoded cache and batch augmentation against the PIL path, on real-size data.

    python benchmarks/data.py --idc IDC/ --cifar10 cifar10/              # CPU
    python benchmarks/data.py --idc IDC/ --cifar10 cifar10/ --device cuda --mixed-precision bf16

`--idc` is a Kaggle-layout folder (277,524 patches) and `--cifar10` a copy of the Hub's parquet files (50k + 10k).
Without the real data, `make-standin-data idc|cifar10` writes stand-ins at the real size and in the real layouts.
Prints one markdown table. Each measurement runs in a fresh process of this script (`--worker`), so that its peak
RSS is its own and no cache of the operating system's or ours is warm unless the row says so ("warm": the same
cache folder a second time; the operating system's page cache is not dropped between rows).
"""
import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

ROOT = Path(__file__).resolve().parents[1]


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # KiB on Linux


def config(args: Dict[str, Any]):
    from timm_patchconvnet.config import TrainConfig
    return TrainConfig(dataset=args['dataset'], data_dir=args['data_dir'], model=args['model'],
                       batch_size=args['batch_size'], loader=args['loader'], cache_dir=args['cache'],
                       num_workers=args.get('num_workers'), auto_augment=args.get('auto_augment', 'none'),
                       split='janowczyk' if args['dataset'] == 'idc' else 'seeded')


def worker_listing(args: Dict[str, Any]) -> Dict[str, Any]:
    """The IDC folder listed, checked and split (the published split), as a run starts."""
    from timm_patchconvnet.data import load_splits
    started = time.perf_counter()
    splits = load_splits('idc', data_dir=args['data_dir'], split_protocol='janowczyk', cache_dir=args['cache'])
    return dict(seconds=time.perf_counter() - started, train=len(splits.train), skipped=splits.left_out.skipped_images)


def _loaders(args: Dict[str, Any]):
    import timm
    from accelerate import Accelerator
    from timm_patchconvnet.data import load_splits
    from timm_patchconvnet.training.loaders import build_loaders
    from timm.data import resolve_data_config
    from timm_patchconvnet.training.model import fitted_pretrained_cfg
    cfg = config(args)
    splits = load_splits(cfg.dataset, data_dir=cfg.data_dir, split_protocol=cfg.split, cache_dir=cfg.cache_dir)
    model = timm.create_model(cfg.model, num_classes=len(splits.label_names))
    data_config = resolve_data_config(pretrained_cfg=fitted_pretrained_cfg(model.pretrained_cfg, cfg, splits))
    accelerator = Accelerator(cpu=args['device'] == 'cpu')
    return model, build_loaders(cfg, splits, data_config, accelerator), accelerator.device


def worker_loader(args: Dict[str, Any]) -> Dict[str, Any]:
    """Time to the first training batch (data read, decoded cache built or found, loaders made), then the train
    loader's images per second alone: batches read and made model input (augmented, with `auto_augment`'s policy
    when given, normalised) on the device."""
    import torch
    from timm_patchconvnet.training.loaders import model_input
    started = time.perf_counter()
    model, loaders, device = _loaders(args)
    batches = iter(loaders.train)
    images, _ = next(batches)
    model_input(images.to(device), loaders.preprocess, train=True)
    first_batch = time.perf_counter() - started
    count, started = 0, time.perf_counter()
    for images, _ in batches:
        x = model_input(images.to(device, non_blocking=True), loaders.preprocess, train=True)
        count += len(x)
        if count >= args['images']:
            break
    if device.type == 'cuda':
        torch.cuda.synchronize()
    return dict(first_batch=first_batch, images_per_second=count / (time.perf_counter() - started))


def worker_train(args: Dict[str, Any]) -> Dict[str, Any]:
    """Training steps of `model` fed by the loader (or, with loader 'none', by one random batch: the model's own
    cost and memory): images per second, and the share of step time spent waiting for data and preprocessing it."""
    import torch
    import torch.nn.functional as F
    from timm.optim import create_optimizer_v2
    from timm_patchconvnet.training.loaders import model_input
    synthetic = args['loader'] == 'none'
    if synthetic:
        import timm
        model = timm.create_model(args['model'], num_classes=10)
        device = torch.device(args['device'])
        size = args['img_size']
        fixed = (torch.randn(args['batch_size'], 3, size, size), torch.randint(0, 10, (args['batch_size'],)))
        batches, preprocess = iter(lambda: fixed, None), None
    else:
        model, loaders, device = _loaders(args)
        batches, preprocess = iter(loaders.train), loaders.preprocess
    model.to(device).train()
    if device.type == 'cuda':
        model = model.to(memory_format=torch.channels_last)
    if args.get('compile'):
        model = torch.compile(model, fullgraph=True)
    optimizer = create_optimizer_v2(model, opt='lamb', lr=1e-3, weight_decay=0.05)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args['mixed_precision'] == 'bf16')
    sync = torch.cuda.synchronize if device.type == 'cuda' else (lambda: None)
    waited, count, started = 0., 0, None
    for step in range(args['warmup'] + args['steps']):
        if step == args['warmup']:
            sync()
            waited, count, started = 0., 0, time.perf_counter()
        before = time.perf_counter()
        images, targets = next(batches)
        images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        x = images if synthetic else model_input(images, preprocess, train=True)
        if args['measure_wait']:
            sync()  # only for this share: it serialises data and model work on a GPU
        waited += time.perf_counter() - before
        with autocast:
            loss = F.cross_entropy(model(x), targets)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        count += len(targets)
    sync()
    seconds = time.perf_counter() - started
    return dict(images_per_second=count / seconds, data_share=waited / seconds, peak_rss_gib=peak_rss_gib())


def worker_push_idc(args: Dict[str, Any]) -> Dict[str, Any]:
    out = Path(args['cache']) / 'idc-export'
    started = time.perf_counter()
    done = subprocess.run([sys.executable, '-m', 'timm_patchconvnet.cli.push_idc_dataset', args['data_dir'],
                           'ORG/IDC', '--dry-run', str(out)], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    size = sum(f.stat().st_size for f in out.rglob('*') if f.is_file())
    return dict(seconds=time.perf_counter() - started, gib=size / 2 ** 30)


WORKERS = dict(listing=worker_listing, loader=worker_loader, train=worker_train, push_idc=worker_push_idc)


def run(kind: str, *, script: str = __file__, **args: Any) -> Dict[str, Any]:
    """One measurement in a fresh process of `script` (this one, or another benchmark's with its own workers); its
    result and its own peak RSS."""
    done = subprocess.run([sys.executable, script, '--worker', kind, json.dumps(args)], capture_output=True,
                          text=True, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f'{kind} {args} failed:\n{done.stderr[-3000:]}')
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(f'  {kind} {args.get("dataset", "")} {args.get("loader", "")} {args.get("model", "")}: {result}',
          file=sys.stderr)
    return result


def answer(workers: Dict[str, Callable[[Dict[str, Any]], Dict[str, Any]]], request: List[str]) -> None:
    """The `--worker KIND OPTIONS` request of `run`, answered with the worker's result as the last line."""
    kind, options = request
    print(json.dumps(workers[kind](json.loads(options))))


def main(argv: List[str] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--idc', help='a Kaggle-layout IDC folder')
    parser.add_argument('--cifar10', help="a copy of the Hub's CIFAR-10 parquet files")
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--mixed-precision', default='no', choices=('no', 'bf16'))
    parser.add_argument('--loader-images', type=int, default=20_000, help='images per loader measurement')
    parser.add_argument('--steps', type=int, default=30, help='timed training steps of ti12 (S60: a third)')
    parser.add_argument('--compile', action='store_true', help='torch.compile the models of the training rows')
    parser.add_argument('--worker', nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return answer(WORKERS, args.worker)

    cache = tempfile.mkdtemp(prefix='patchconvnet-data-bench-')
    rows: List[tuple] = []
    common = dict(device=args.device, cache=cache, batch_size=64, mixed_precision=args.mixed_precision)
    try:
        if args.idc:
            cold, warm = (run('listing', data_dir=args.idc, cache=cache) for _ in range(2))
            rows.append(('IDC listing, check and split: cold / warm',
                         f'{cold["seconds"]:.1f} s / {warm["seconds"]:.1f} s',
                         f'{cold["train"]:,} train patches, {cold["skipped"]} unreadable'))
        for dataset, folder, size in (('cifar10', args.cifar10, 32), ('idc', args.idc, 50)):
            if not folder:
                continue
            data = dict(common, dataset=dataset, data_dir=folder, model='patchconvnet_ti12_p4')
            pil = run('loader', **data, loader='pil', num_workers=0, images=args.loader_images // 10)
            pil2 = run('loader', **data, loader='pil', num_workers=2, images=args.loader_images // 10)
            cold = run('loader', **data, loader='decoded', images=args.loader_images)
            warm = run('loader', **data, loader='decoded', images=args.loader_images)
            best_pil = max(pil['images_per_second'], pil2['images_per_second'])
            rows.append((f'{dataset} ({size} px): time to first batch, pil / decoded cold / decoded warm',
                         f'{pil["first_batch"]:.1f} s / {cold["first_batch"]:.1f} s / {warm["first_batch"]:.1f} s',
                         'cold: the decoded cache of the three splits is built'))
            rows.append((f'{dataset} ({size} px): loader img/s, pil (no worker / 2 workers) vs decoded',
                         f'{pil["images_per_second"]:,.0f} / {pil2["images_per_second"]:,.0f} vs '
                         f'{warm["images_per_second"]:,.0f}',
                         f'{warm["images_per_second"] / best_pil:.0f}x the better PIL; {args.device}'))
            models = [('patchconvnet_ti12_p4', args.steps)]
            if dataset == 'cifar10':  # S60 /4 on CIFAR-10, the seed paper's setting
                models.append(('patchconvnet_s60_p4', max(3, args.steps // 3)))
            for model, steps in models:
                train = dict(data, model=model, steps=steps, warmup=2, img_size=size, measure_wait=True,
                             compile=args.compile)
                alone = run('train', **train, loader='none')
                results = {loader: run('train', **train, loader=loader) for loader in ('pil', 'decoded')}
                images = 50_000 if dataset == 'cifar10' else 89_107  # a CIFAR-10 epoch; the published IDC split's train
                rows.append((f'{dataset}: {model} training img/s, model alone / pil (default workers) / decoded',
                             ' / '.join(f'{r["images_per_second"]:,.0f}' for r in (alone, *results.values())),
                             f'{steps} timed steps; an epoch of {images:,} at these rates: '
                             f'{images / results["decoded"]["images_per_second"]:,.0f} s decoded, '
                             f'{images / results["pil"]["images_per_second"]:,.0f} s pil; data share of step time '
                             f'{results["pil"]["data_share"]:.0%} pil, {results["decoded"]["data_share"]:.0%} decoded'))
                rows.append((f'{dataset}: {model} peak RSS, model alone / pil / decoded',
                             ' / '.join(f'{r["peak_rss_gib"]:.2f}' for r in (alone, *results.values())) + ' GiB',
                             f'decoded: {results["decoded"]["peak_rss_gib"] - alone["peak_rss_gib"]:+.2f} GiB over '
                             'the model alone (pil: main process only)'))
        if args.idc:
            push = run('push_idc', data_dir=args.idc, cache=cache)
            rows.append(('patchconvnet-push-idc --dry-run', f'{push["seconds"]:.0f} s',
                         f'{push["gib"]:.2f} GiB written'))
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    import torch
    print(f'torch {torch.__version__}, {os.cpu_count()} CPUs, device {args.device}, batch 64, '
          f'mixed precision {args.mixed_precision}\n')
    print('| measurement | result | notes |\n|---|---|---|')
    for row in rows:
        print('| ' + ' | '.join(row) + ' |')


if __name__ == '__main__':
    sys.path.insert(0, str(ROOT))
    main()
