"""Do bf16 and int8 keep a trained model's answers? Each precision against float32 on the run's own held-out images,
with issue 24's bounds, and the accuracy beside float32's.

    python benchmarks/precision_agreement.py --run runs/idc --dataset idc --data-dir IDC_FOLDER
    python benchmarks/precision_agreement.py --run tests/fixtures/faithfulness_runs/single --dataset digits

--run is a train.py output folder (config.json, model.safetensors, metrics.json). Its data is read by `load_splits`
as the run recorded it (data set, seed, fractions, patient split), from --data-dir when it has moved, so the test
split is the run's own held-out one. From it, --limit images are drawn (seeded; all when fewer); int8 is calibrated
on --calibration images drawn from the run's training split, as the issue asks ("a few hundred training images").

Each precision and backend `optimize_for_inference` offers is one row (`precision.BACKENDS`), compared with the
model as created (float32, eager) by `precision.agreement`: top-1 agreement, and the Pearson correlation of each
image's attention map (token grid) with float32's, median and 5th percentile; whether that holds the bounds
(`MIN_TOP1_AGREEMENT`, `MIN_MEDIAN_PEARSON`, `MIN_P5_PEARSON`); and accuracy and balanced accuracy against the
labels (argmax: no decision threshold), with their difference from float32's. A precision the CPU does not run
natively (`unsupported_reason`), or whose backend is not installed, is a row saying why. A row that misses a bound is
followed by its agreement per true class. Prints one markdown table.
"""
import argparse
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from sklearn.metrics import accuracy_score, balanced_accuracy_score

from timm_patchconvnet.precision import (
    BACKENDS, MIN_MEDIAN_PEARSON, MIN_P5_PEARSON, MIN_TOP1_AGREEMENT, Agreement, Hardware, InferenceModel,
    PrecisionError, agreement, detect_hardware, optimize_for_inference, unsupported_reason)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: the checkout's benchmarks
from benchmarks.benchmark import positive_int  # noqa: E402
from benchmarks.training_runs import load_run_splits, preprocessed, recorded_config, training_run  # noqa: E402

CANDIDATES = tuple(f'{precision}-{backend}' for precision, backends in BACKENDS.items() for backend in backends)
BATCH = 64
COLUMNS = ('precision', 'backend', 'images', 'top-1 agreement', 'map Pearson median', 'map Pearson 5th pct',
           'bounds', 'accuracy', 'Δ accuracy', 'balanced accuracy', 'Δ balanced accuracy')
BOUNDS = (f'top-1 agreement >= {MIN_TOP1_AGREEMENT}, map Pearson median >= {MIN_MEDIAN_PEARSON}, '
          f'5th percentile >= {MIN_P5_PEARSON}')


def seeded_subset(split, count: int, seed: int):
    """`count` rows of a `datasets.Dataset` drawn without replacement (in their order), or all of them when fewer:
    the first rows of an IDC split are one or two patients'."""
    if count >= len(split):
        return split
    return split.select(sorted(np.random.default_rng(seed).choice(len(split), count, replace=False).tolist()))


@torch.no_grad()
def predictions(model: torch.nn.Module, images: torch.Tensor) -> np.ndarray:
    return torch.cat([model(batch).argmax(-1) for batch in images.split(BATCH)]).numpy()


def prepare(model: torch.nn.Module, candidate: str, hardware: Hardware,
            calibration: Sequence[torch.Tensor]) -> InferenceModel | str:
    """The model at the candidate's precision and backend, or why it cannot run here."""
    precision, backend = candidate.split('-')
    reason = unsupported_reason(precision, hardware)
    if reason:
        return reason
    try:
        return optimize_for_inference(model, precision, backend=backend,
                                      calibration=calibration if precision == 'int8' else None)
    except (PrecisionError, ImportError) as err:
        return str(err)


def scores(labels: np.ndarray, predicted: np.ndarray) -> Tuple[float, float]:
    return accuracy_score(labels, predicted), balanced_accuracy_score(labels, predicted)


def scored_row(precision: str, backend: str, labels: np.ndarray, predicted: np.ndarray,
               reference: Optional[Tuple[float, float]], measured: Optional[Agreement]) -> Dict[str, str]:
    """A table row: the agreement with float32 (none for the reference itself) and the scores against the labels."""
    measured_scores = scores(labels, predicted)
    row = dict(precision=precision, backend=backend, images=str(len(labels)))
    row['accuracy'], row['balanced accuracy'] = (f'{score:.4f}' for score in measured_scores)
    if reference is not None:  # + 0.0: no "-0.0000"
        row['Δ accuracy'], row['Δ balanced accuracy'] = (f'{round(score - ref, 4) + 0.0:+.4f}'
                                                         for score, ref in zip(measured_scores, reference))
    if measured is not None:
        row['top-1 agreement'] = f'{measured.top1:.4f}'
        row['map Pearson median'] = f'{measured.pearson_median:.4f}'
        row['map Pearson 5th pct'] = f'{measured.pearson_p5:.4f}'
        row['bounds'] = 'pass' if measured.holds() else '**fail**'
    return row


def per_class(model: torch.nn.Module, optimized: InferenceModel, images: torch.Tensor, labels: np.ndarray,
              label_names: Sequence[str]) -> List[str]:
    """Where a row misses a bound: its agreement on the images of each true class."""
    lines = []
    for index, name in enumerate(label_names):
        chosen = torch.from_numpy(labels == index)
        if chosen.any():
            measured = agreement(model, optimized, images[chosen])
            lines.append(f'- {optimized.describe()}, true class {name} ({int(chosen.sum())} images): top-1 agreement '
                         f'{measured.top1:.4f}, map Pearson median {measured.pearson_median:.4f}, 5th percentile '
                         f'{measured.pearson_p5:.4f}')
    return lines


def markdown(rows: Sequence[Dict[str, str]]) -> str:
    lines = ['| ' + ' | '.join(COLUMNS) + ' |', '|' + '---|' * len(COLUMNS)]
    lines += ['| ' + ' | '.join(row.get(column, '-') for column in COLUMNS) + ' |' for row in rows]
    return '\n'.join(lines)


def measure(args: argparse.Namespace) -> int:
    model, splits = load_run_splits(args.run, args.data_dir)
    test = seeded_subset(splits.test, args.limit, args.seed)
    images, labels = preprocessed(model, splits.dataset, test)
    calibration_images, _ = preprocessed(model, splits.dataset,
                                         seeded_subset(splits.train, args.calibration, args.seed))
    calibration = calibration_images.split(BATCH)
    labels = labels.numpy()
    hardware = detect_hardware('cpu')
    print(f'{args.run.display_name}: {len(test)} of the {len(splits.test)} test images of {splits.source}; int8 '
          f'calibrated on {len(calibration_images)} of its {len(splits.train)} training images')
    print(f'CPU: {hardware.describe()}, {torch.get_num_threads()} torch threads; bounds: {BOUNDS}\n')
    predicted = predictions(model, images)
    rows, notes = [scored_row('fp32', 'eager (reference)', labels, predicted, None, None)], []
    reference_scores = scores(labels, predicted)
    for candidate in args.precisions:
        optimized = prepare(model, candidate, hardware, calibration)
        precision, backend = candidate.split('-')
        if isinstance(optimized, str):
            rows.append(dict(precision=precision, backend=backend, bounds=f'not run: {optimized}'))
            continue
        measured = agreement(model, optimized, images)
        rows.append(scored_row(precision, backend, labels, predictions(optimized, images), reference_scores,
                               measured))
        if not measured.holds():
            notes += per_class(model, optimized, images, labels, splits.label_names)
    print(markdown(rows))
    if notes:
        print('\nPer true class, where a bound was missed:\n' + '\n'.join(notes))
    return 0


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--run', type=training_run, required=True,
                        help='a training folder (train.py --output-dir) with metrics.json')
    parser.add_argument('--dataset', help='the data set the run was trained on (checked against its metrics.json; '
                                          'default: what it records)')
    parser.add_argument('--data-dir', help="the data folder, when not where the run's metrics.json says")
    parser.add_argument('--limit', type=positive_int, default=2000,
                        help='held-out images compared, drawn from the test split (default 2000)')
    parser.add_argument('--calibration', type=positive_int, default=256,
                        help='training images int8 is calibrated on (default 256)')
    parser.add_argument('--precisions', nargs='+', choices=CANDIDATES, default=list(CANDIDATES), metavar='NAME',
                        help=f'the rows, each precision-backend: {", ".join(CANDIDATES)} (default: all)')
    parser.add_argument('--seed', type=int, default=0, help='of the images drawn (default 0)')
    args = parser.parse_args(argv)
    recorded = recorded_config(args.run)['dataset']
    if args.dataset is not None and args.dataset != recorded:
        parser.error(f'--dataset {args.dataset}: {args.run.display_name} was trained on {recorded}')
    return args


def main(argv: Optional[List[str]] = None) -> int:
    from timm_patchconvnet.data import DataError

    args = parse_args(argv)
    try:
        return measure(args)
    except DataError as err:
        print(f'error: {err}', file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main())
