"""Do the attention maps point at what the prediction depends on? Attention against Grad-CAM and chance (issue 16).

    python benchmarks/faithfulness.py run --checkpoint runs/digits --out /tmp/faithfulness/digits
    python benchmarks/faithfulness.py run --checkpoint runs/idc --data-dir IDC_FOLDER --out /tmp/faithfulness/idc
    python benchmarks/faithfulness.py run --official-tiny --out /tmp/faithfulness/official_tiny
    python train.py --dataset digits --class-tokens per_class --epochs 20 --output-dir /tmp/digits-per-class
    python benchmarks/faithfulness.py run --checkpoint runs/digits --per-class /tmp/digits-per-class --out ...

On the test images of a trained model (the held-out split its training run recorded in metrics.json, or, for the
official tiny fixture, crops of scikit-learn's two sample photos), four maps of the predicted class are compared:

- attention: `get_attention_map`, the pooling's weights (one forward pass);
- Grad-CAM: `gradcam_map`, pytorch-grad-cam's GradCAM on the last trunk block (a forward and a backward pass);
- random: a uniform random map on the token grid, upsampled like the others (no information, same smoothness);
- centre: a Gaussian centred on the image (sigma a quarter of the side): "the object is in the middle".

Each map is measured by what happens to the predicted class's softmax probability when pixels are taken away:

- ROAD combined (Rong et al. 2022; pytorch-grad-cam's `ROADCombined`, percentiles 20/40/60/80): the mean over the
  percentiles of (LeRF - MoRF) / 2, the pixels imputed by noisy linear interpolation; higher is more faithful;
- deletion AUC (RISE, Petsiuk et al. 2018): pixels set to the data's mean colour (0 after normalisation), most
  salient first, in 16 steps; area under the probability curve; lower is more faithful;
- insertion AUC: from a blurred copy (sigma = side / 8), the most salient pixels put back first; higher is better.

Only a map's order matters to these measures: maps are replaced by their ranks, ties broken at random (Grad-CAM's
ReLU leaves many exact zeros, the centre prior many equal rings), so that no method gains from ties.
Means come with 95% percentile-bootstrap intervals over images (2000 resamples), and paired differences against
the attention map with theirs. Time per map is the median of interleaved calls (forward pass, attention map,
Grad-CAM) at batch 1 and per image at batch 64. With `--per-class DIR` (a per-class-token model of the same
data), the class specificity of its maps: on each image, the overlap of the two top classes' maps (IoU of the top
20% pixels, Pearson r), attention against Grad-CAM, and the deletion AUC of the second class's probability when
deleting by its own map rather than by the top class's.

Writes OUT/faithfulness.md (the tables), OUT/results.json and OUT/deletion_curves.png; prints the tables.
Needs the `explain` extra (pytorch-grad-cam), matplotlib, and the `train` extra for the data splits.
"""
import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import timm
import torch
import torch.nn.functional as F
from pytorch_grad_cam.metrics.road import ROADCombined
from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget, ClassifierOutputTarget
from timm.data import resolve_data_config
from torchvision.transforms.functional import gaussian_blur

from timm_patchconvnet import get_attention_map, gradcam_map  # the import registers the models
from timm_patchconvnet.attention import scale_to_unit
from timm_patchconvnet.model_ref import ModelRef

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: the checkout's benchmarks
from benchmarks.training_runs import load_run_splits, preprocessed, training_run  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OFFICIAL_TINY = ROOT / 'tests' / 'fixtures' / 'official_tiny' / 'weights.safetensors'
METHODS = ('attention', 'Grad-CAM', 'random', 'centre')
ROAD_PERCENTILES = [20, 40, 60, 80]
DELETION_STEPS = 16
TOP_FRACTION = .2  # the "region" of a map, for class-specificity IoU
BOOTSTRAP = 2000
CHUNK = 64


# --- data and models ------------------------------------------------------------------------------------------

def load_run(run: ModelRef, data_dir: Optional[str]) -> Tuple[torch.nn.Module, torch.Tensor, torch.Tensor, str]:
    """A training folder's model, its held-out test images (preprocessed as in evaluation) and their labels."""
    model, splits = load_run_splits(run, data_dir)
    images, labels = preprocessed(model, splits.dataset, splits.test)
    return model, images, labels, f'{run.display_name}: the {len(images)} test images of {splits.source}'


def load_official_tiny(count: int, size: int, seed: int) -> Tuple[torch.nn.Module, torch.Tensor, None, str]:
    """The official tiny fixture (untrained: seeded and perturbed weights) on `count` random crops of
    scikit-learn's two sample photos, `size` px, normalised with the model's data config."""
    import sklearn.datasets
    from PIL import Image

    model = timm.create_model('patchconvnet_s60_p16', embed_dim=48, depth=2, num_classes=10, pretrained=True,
                              pretrained_cfg_overlay=dict(file=str(OFFICIAL_TINY), num_classes=10)).eval()
    config = resolve_data_config(model=model)
    folder = Path(sklearn.datasets.__file__).parent / 'images'
    photos = [np.array(Image.open(folder / name).convert('RGB')) for name in ('china.jpg', 'flower.jpg')]
    rng = np.random.default_rng(seed)
    crops = []
    for i in range(count):
        photo = photos[i % 2]
        side = int(rng.integers(size, min(photo.shape[:2]) + 1))
        top, left = (int(rng.integers(0, photo.shape[d] - side + 1)) for d in (0, 1))
        crop = torch.from_numpy(photo[top:top + side, left:left + side]).permute(2, 0, 1).float() / 255
        crops.append(F.interpolate(crop[None], size=(size, size), mode='bilinear', antialias=True,
                                   align_corners=False)[0])
    mean, std = (torch.tensor(config[k]).view(3, 1, 1) for k in ('mean', 'std'))
    images = (torch.stack(crops) - mean) / std
    return model, images, None, (f'official tiny fixture (untrained weights): {count} random {size}x{size} crops of '
                           f"scikit-learn's china.jpg and flower.jpg")


# --- maps -----------------------------------------------------------------------------------------------------

def in_chunks(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    return torch.cat([fn(x[i:i + CHUNK]) for i in range(0, len(x), CHUNK)])


@torch.no_grad()
def predict(model: torch.nn.Module, x: torch.Tensor, score: str = 'probability') -> torch.Tensor:
    """(N, num_classes) softmax probabilities, or logits with score='logit'."""
    return in_chunks(lambda batch: model(batch).softmax(-1) if score == 'probability' else model(batch), x)


def token_grid(model: torch.nn.Module, x: torch.Tensor) -> Tuple[int, int]:
    return get_attention_map(model, x[:1], upsample=False).shape[-2:]


def upsampled(grid: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """A (B, h, w) map at the input size, as `get_attention_map` upsamples (bilinear), scaled to [0, 1]."""
    return scale_to_unit(F.interpolate(grid[:, None], size=tuple(size), mode='bilinear', align_corners=False)[:, 0])


def centre_prior(size: Sequence[int]) -> torch.Tensor:
    h, w = size
    yy, xx = torch.meshgrid(torch.arange(h) + .5 - h / 2, torch.arange(w) + .5 - w / 2, indexing='ij')
    sigma = min(h, w) / 4
    return torch.exp(-(xx ** 2 + yy ** 2) / (2 * sigma ** 2))


def all_maps(model: torch.nn.Module, x: torch.Tensor, seed: int) -> Dict[str, torch.Tensor]:
    """Each method's (N, H, W) map of the predicted class."""
    generator = torch.Generator().manual_seed(seed)
    size = x.shape[-2:]
    return {
        'attention': in_chunks(lambda batch: get_attention_map(model, batch), x),
        'Grad-CAM': in_chunks(lambda batch: gradcam_map(model, batch), x),
        'random': upsampled(torch.rand(len(x), *token_grid(model, x), generator=generator), size),
        'centre': centre_prior(size).expand(len(x), -1, -1).clone(),
    }


def ranks(maps: torch.Tensor, seed: int) -> torch.Tensor:
    """Each map as the rank of its pixels in [0, 1] (1 = most salient), ties broken at random: the measures only
    use a map's order, and a sort would otherwise break ties by pixel position (the top rows first)."""
    generator = np.random.default_rng(seed)
    flat = maps.flatten(1).double().numpy()
    out = np.empty_like(flat)
    for i, row in enumerate(flat):
        order = np.lexsort((generator.random(row.size), row))  # by value, then by a random key
        out[i, order] = np.arange(row.size) / (row.size - 1)
    return torch.from_numpy(out).float().view_as(maps)


# --- measures -------------------------------------------------------------------------------------------------

def road_combined(model: torch.nn.Module, x: torch.Tensor, rank_maps: torch.Tensor, classes: torch.Tensor,
                  seed: int, score: str = 'probability') -> np.ndarray:
    """pytorch-grad-cam's ROADCombined per image, on the class's softmax probability (or logit)."""
    torch.manual_seed(seed)  # the imputer's noise
    metric = ROADCombined(percentiles=ROAD_PERCENTILES)
    target = ClassifierOutputSoftmaxTarget if score == 'probability' else ClassifierOutputTarget
    scores = []
    for i in range(0, len(x), CHUNK):
        targets = [target(int(c)) for c in classes[i:i + CHUNK]]
        scores.append(metric(x[i:i + CHUNK], rank_maps[i:i + CHUNK].numpy(), targets, model))
    return np.concatenate(scores)


@torch.no_grad()
def deletion_insertion(model: torch.nn.Module, x: torch.Tensor, rank_maps: torch.Tensor, classes: torch.Tensor,
                       score: str = 'probability') -> Tuple[np.ndarray, np.ndarray]:
    """(N, steps + 1) probability (or logit) curves of `classes`: deleting the most salient pixels first (to 0, the mean
    colour after normalisation), and inserting them first into a blurred copy."""
    side = min(x.shape[-2:])
    sigma = side / 8
    blurred = gaussian_blur(x, kernel_size=2 * math.ceil(3 * sigma) + 1, sigma=sigma)
    pixels = rank_maps[0].numel()
    position = ((1 - rank_maps) * (pixels - 1)).round()[:, None]  # 0 = the most salient pixel
    deletion, insertion = [], []
    for step in range(DELETION_STEPS + 1):
        taken = position < step * pixels / DELETION_STEPS  # the first step / steps of the pixels
        for curves, batch in ((deletion, torch.where(taken, 0., x)), (insertion, torch.where(taken, x, blurred))):
            curves.append(predict(model, batch, score)[torch.arange(len(x)), classes].numpy())
    return np.stack(deletion, 1), np.stack(insertion, 1)


def auc(curves: np.ndarray) -> np.ndarray:
    return np.trapezoid(curves, dx=1 / (curves.shape[1] - 1), axis=1)


def bootstrap(values: np.ndarray, seed: int) -> Tuple[float, float, float]:
    """Mean and its 95% percentile-bootstrap interval over images."""
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (BOOTSTRAP, len(values)))].mean(1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(values.mean()), float(low), float(high)


def timings(model: torch.nn.Module, x: torch.Tensor, count: int) -> Dict[str, Dict[str, float]]:
    """Median seconds per image of a plain forward pass, an attention map and a Grad-CAM map, at batch 1 (the calls
    interleaved, so a machine that slows down penalises none of them) and at batch 64."""
    def forward(batch):
        with torch.no_grad():
            return model(batch)

    calls = {'forward': forward, 'attention': lambda b: get_attention_map(model, b),
             'Grad-CAM': lambda b: gradcam_map(model, b),
             # where the attention map's extra cost goes: without the upsampling and scaling
             'attention, raw grid': lambda b: get_attention_map(model, b, upsample=False, normalize=False)}
    for fn in calls.values():  # warm-up: first calls allocate and pick kernels
        fn(x[:1]), fn(x[:CHUNK])
    single = {name: [] for name in calls}
    for i in range(count):
        for name, fn in calls.items():
            started = time.perf_counter()
            fn(x[i:i + 1])
            single[name].append(time.perf_counter() - started)
    batched = {name: [] for name in calls}
    for _ in range(5):
        for name, fn in calls.items():
            started = time.perf_counter()
            fn(x[:CHUNK])
            batched[name].append((time.perf_counter() - started) / len(x[:CHUNK]))
    return {name: {'batch1': statistics.median(single[name]), 'batch64': statistics.median(batched[name])}
            for name in calls}


# --- class specificity (per-class tokens) ---------------------------------------------------------------------

def class_maps(model: torch.nn.Module, x: torch.Tensor, classes: torch.Tensor,
               fn: Callable[[torch.Tensor, int], torch.Tensor]) -> torch.Tensor:
    """(N, H, W): for image i, the map of class classes[i], computed per class on the images that need it."""
    out = torch.empty(len(x), *x.shape[-2:])
    for c in classes.unique().tolist():
        where = (classes == c).nonzero()[:, 0]
        out[where] = in_chunks(lambda batch: fn(batch, c), x[where])
    return out


def top_region_iou(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    top_a, top_b = (m.flatten(1) >= 1 - TOP_FRACTION for m in (a, b))
    return ((top_a & top_b).sum(1) / (top_a | top_b).sum(1)).numpy()


def pearson(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    a, b = (m.flatten(1).double() for m in (a, b))
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    return ((a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-12)).numpy()


def class_specificity(model: torch.nn.Module, x: torch.Tensor, seed: int) -> Dict[str, dict]:
    """Overlap of the maps of each image's two top classes, and how each class's map deletes its own class."""
    top2 = predict(model, x).topk(2, dim=-1)
    first, second = top2.indices[:, 0], top2.indices[:, 1]
    sources = {
        'attention': lambda batch, c: get_attention_map(model, batch, class_index=c),
        'Grad-CAM': lambda batch, c: gradcam_map(model, batch, class_index=c),
    }
    results = {'_second_probability_median': float(top2.values[:, 1].median())}
    for name, fn in sources.items():
        maps_1, maps_2 = (ranks(class_maps(model, x, classes, fn), seed + k) for k, classes in
                          enumerate((first, second)))
        own, _ = deletion_insertion(model, x, maps_2, second)  # p(second class), deleting by its own map
        other, _ = deletion_insertion(model, x, maps_1, second)  # ... by the top class's map
        results[name] = {'iou': top_region_iou(maps_1, maps_2), 'pearson': pearson(maps_1, maps_2),
                         'deletion_own': auc(own), 'deletion_other': auc(other)}
    generator = torch.Generator().manual_seed(seed)
    chance = [ranks(upsampled(torch.rand(len(x), *token_grid(model, x), generator=generator), x.shape[-2:]), seed + k)
              for k in range(2)]
    results['random'] = {'iou': top_region_iou(*chance), 'pearson': pearson(*chance)}
    return results


# --- report ---------------------------------------------------------------------------------------------------

def fmt(stats: Tuple[float, float, float]) -> str:
    """Three significant digits: a saturated measure then shows as 1e-05, not as a tie at 0.000."""
    mean, low, high = stats
    return f'{mean:.3g} [{low:.3g}, {high:.3g}]'


def report(title: str, description: str, n: int, accuracy: Optional[float], results: Dict[str, dict],
           times: Dict[str, Dict[str, float]], seconds: float, seed: int,
           specificity: Optional[Dict[str, dict]]) -> Tuple[str, dict]:
    """The markdown tables, and what results.json keeps."""
    stats = {method: {measure: bootstrap(values, seed) for measure, values in results[method].items()
                      if measure in ('road', 'deletion', 'insertion')} for method in METHODS}
    scored = '' if accuracy is None else f' Top-1 accuracy on them: {accuracy:.1%}.'
    lines = [f'### {title}', '', f'{description}.{scored}',
             '', '| map | ROAD combined (higher is better) | deletion AUC (lower) | insertion AUC (higher) | '
             'ms per map, batch 1 | x forward | ms per image, batch 64 | x forward |',
             '|---|---|---|---|---|---|---|---|']
    forward = times['forward']
    for method in METHODS:
        s = stats[method]
        if method in times:
            t = times[method]
            cost = (f'{t["batch1"] * 1e3:.2f} | {t["batch1"] / forward["batch1"]:.2f} | {t["batch64"] * 1e3:.3f} | '
                    f'{t["batch64"] / forward["batch64"]:.2f}')
        else:
            cost = 'no model call | - | no model call | -'
        lines.append(f'| {method} | {fmt(s["road"])} | {fmt(s["deletion"])} | {fmt(s["insertion"])} | {cost} |')
    raw = times['attention, raw grid']
    lines.append(f'| (attention, raw token grid: `upsample=False, normalize=False`) | | | | '
                 f'{raw["batch1"] * 1e3:.2f} | {raw["batch1"] / forward["batch1"]:.2f} | {raw["batch64"] * 1e3:.3f} | '
                 f'{raw["batch64"] / forward["batch64"]:.2f} |')
    lines.append(f'| (one forward pass) | | | | {forward["batch1"] * 1e3:.2f} | 1 | '
                 f'{forward["batch64"] * 1e3:.3f} | 1 |')
    lines += ['', 'Paired differences, attention minus the other map (mean [95% CI] over the same images):', '',
              '| against | ROAD combined | deletion AUC | insertion AUC |', '|---|---|---|---|']
    paired = {}
    for other in METHODS[1:]:
        paired[other] = {measure: bootstrap(results['attention'][measure] - results[other][measure], seed)
                         for measure in ('road', 'deletion', 'insertion')}
        p = paired[other]
        lines.append(f'| {other} | {fmt(p["road"])} | {fmt(p["deletion"])} | {fmt(p["insertion"])} |')
    beats = {other: {'road': stats['attention']['road'][1] > stats[other]['road'][2],
                     'deletion': stats['attention']['deletion'][2] < stats[other]['deletion'][1]}
             for other in ('random', 'centre')}
    names = {'road': 'ROAD combined', 'deletion': 'deletion AUC', 'insertion': 'insertion AUC'}
    saturated = [names[m] for m in names if np.ptp([stats[method][m][0] for method in METHODS]) < 1e-3]
    if saturated:  # every map scores the same: the perturbations leave the prediction as it was
        lines += ['', f'Saturated here (all maps within 0.001; the measure cannot rank them): {", ".join(saturated)}.']
    lines += ['', 'Attention beats, with non-overlapping 95% intervals: ' + '; '.join(
        f'{other}: ROAD {"yes" if b["road"] else "no"}, deletion {"yes" if b["deletion"] else "no"}'
        for other, b in beats.items()) + '.']
    record = {'title': title, 'description': description, 'images': n, 'accuracy': accuracy, 'stats': stats,
              'paired_vs_attention': paired, 'attention_beats': beats, 'seconds_per_map': times,
              'total_seconds': seconds}
    if specificity:
        lines += ['', f'Class specificity (per-class tokens; {n} images; the two top classes of each image, the '
                  f"second's median probability {specificity['_second_probability_median']:.2g}): overlap of their "
                  f'two maps (lower = more class-specific), and the deletion AUC of the second class\'s probability '
                  f'when deleting by its own map or by the top class\'s map (own lower = its map is about it):', '',
                  '| maps | IoU of top 20% | Pearson r | deletion AUC, own map | deletion AUC, top class\'s map |',
                  '|---|---|---|---|---|']
        record['class_specificity'] = {'second_probability_median': specificity['_second_probability_median']}
        for name in ('attention', 'Grad-CAM', 'random'):
            values = specificity[name]
            s = {measure: bootstrap(v, seed) for measure, v in values.items()}
            record['class_specificity'][name] = s
            own = fmt(s['deletion_own']) if 'deletion_own' in s else '-'
            other = fmt(s['deletion_other']) if 'deletion_other' in s else '-'
            label = 'two random maps (chance)' if name == 'random' else name
            lines.append(f'| {label} | {fmt(s["iou"])} | {fmt(s["pearson"])} | {own} | {other} |')
    lines += ['', f'{n} images; whole run {seconds:.0f} s on {torch.get_num_threads()} threads '
              f'(torch {torch.__version__}).']
    return '\n'.join(lines) + '\n', record


def plot(curves: Dict[str, Tuple[np.ndarray, np.ndarray]], title: str, score: str, path: Path) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fractions = np.linspace(0, 1, DELETION_STEPS + 1)
    figure, axes = plt.subplots(1, 2, figsize=(8, 3.2), sharey=True)
    for method, (deletion, insertion) in curves.items():
        for ax, values in zip(axes, (deletion, insertion)):
            mean = values.mean(0)
            half = 1.96 * values.std(0, ddof=1) / math.sqrt(len(values))
            line, = ax.plot(fractions, mean, label=method)
            ax.fill_between(fractions, mean - half, mean + half, color=line.get_color(), alpha=.2, linewidth=0)
    axes[0].set(title='deletion (most salient first)', xlabel='fraction of pixels deleted',
                ylabel=f'{score} of the predicted class')
    axes[1].set(title='insertion into a blurred copy', xlabel='fraction of pixels inserted')
    axes[0].legend(fontsize=8)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    torch.manual_seed(args.seed)
    if args.official_tiny:
        model, x, labels, description = load_official_tiny(args.images or 300, args.size, args.seed)
        title = 'official tiny fixture'
    else:
        model, x, labels, description = load_run(args.checkpoint, args.data_dir)
        title = args.checkpoint.display_name
    if args.images:
        x, labels = x[:args.images], None if labels is None else labels[:args.images]
    per_class = None
    if args.per_class:  # checked before the long part
        per_class_model, per_class_x, _, _ = load_run(args.per_class, args.data_dir)
        if getattr(per_class_model, 'class_tokens', None) != 'per_class':
            print(f'error: --per-class {args.per_class.display_name} is not a per-class-token model', file=sys.stderr)
            return 2
        per_class = per_class_model, per_class_x[:len(x)]
    classes = predict(model, x).argmax(-1)
    accuracy = None if labels is None else float((classes == labels).float().mean())
    print(f'{description}; {len(x)} images, computing maps...', flush=True)
    maps = all_maps(model, x, args.seed)
    results, curves = {}, {}
    for k, method in enumerate(METHODS):
        rank_maps = ranks(maps[method], args.seed + k)
        deletion, insertion = deletion_insertion(model, x, rank_maps, classes, args.score)
        road = road_combined(model, x, rank_maps, classes, args.seed, args.score)
        results[method] = {'road': road, 'deletion': auc(deletion), 'insertion': auc(insertion)}
        curves[method] = (deletion, insertion)
        print(f'{method}: done at {time.perf_counter() - started:.0f} s', flush=True)
    times = timings(model, x, min(args.timing_images, len(x)))
    specificity = None if per_class is None else class_specificity(*per_class, args.seed)
    seconds = time.perf_counter() - started
    description += f"; the measures follow the predicted class's {args.score}"
    table, record = report(title, description, len(x), accuracy, results, times, seconds, args.seed, specificity)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / 'faithfulness.md').write_text(table)
    (out / 'results.json').write_text(json.dumps(record, indent=1))
    plot(curves, f'{title}: {len(x)} images, mean and 95% CI', args.score, out / 'deletion_curves.png')
    print(table)
    print(f'wrote {out / "faithfulness.md"}, {out / "results.json"} and {out / "deletion_curves.png"}')
    return 0


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest='command', required=True)  # one command, `run`, kept for old scripts
    bench = commands.add_parser('run', help='measure the maps of one model')
    source = bench.add_mutually_exclusive_group(required=True)
    source.add_argument('--checkpoint', type=training_run,
                        help='a training folder (train.py --output-dir) with metrics.json')
    source.add_argument('--official-tiny', action='store_true', help='the official tiny fixture on photo crops')
    bench.add_argument('--data-dir', help="the data folder, when not where the training run's metrics.json says")
    bench.add_argument('--per-class', type=training_run, metavar='DIR',
                       help='a per-class-token model of the same data, for class specificity (train.py '
                            '--class-tokens per_class)')
    bench.add_argument('--out', required=True, help='folder for faithfulness.md, results.json, deletion_curves.png')
    bench.add_argument('--images', type=int, help='use the first N test images (default: all; 300 crops for '
                                                  '--official-tiny)')
    bench.add_argument('--size', type=int, default=112, help='crop size for --official-tiny (default 112: 7x7 tokens)')
    bench.add_argument('--timing-images', type=int, default=50, help='images timed at batch 1 (default 50)')
    bench.add_argument('--score', choices=('probability', 'logit'), default='probability',
                       help="what the measures follow: the predicted class's softmax probability (default), or its "
                            'logit, for a model whose probabilities hardly move (e.g. the untrained fixture)')
    bench.add_argument('--seed', type=int, default=0)
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    return run(parse_args(argv))


if __name__ == '__main__':
    sys.exit(main())
