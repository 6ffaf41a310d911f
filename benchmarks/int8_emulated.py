"""int8 on an AVX2-only CPU, emulated (issue 24): does ONNX Runtime's int8 keep the digits runs' answers on its AVX2
kernels, whose 16-bit sums saturate with 8-bit weights, and with the 7-bit weights (`reduce_range`) it advises there?

A CPU with VNNI runs ONNX Runtime's VNNI kernels. QEMU's user mode with `-cpu Haswell` (AVX2 and FMA; no AVX-512, no
VNNI) makes it pick its AVX2 ones instead, as on an AMD Zen 2/3 VM. Emulation is slow and says nothing of speed, and
torch need not run under it: quantize and compare natively, and run only ONNX Runtime under QEMU (apt's qemu-user):

    python benchmarks/int8_emulated.py prepare OUT   # the two digits runs, 8- and 7-bit weights, held-out images
    python benchmarks/int8_emulated.py run OUT native
    qemu-x86_64 -cpu Haswell .venv/bin/python benchmarks/int8_emulated.py run OUT haswell
    python benchmarks/int8_emulated.py compare OUT native haswell

(QEMU warns that TCG lacks a few of Haswell's system features, pcid, hle, rtm...: none is used here.)
"""
import argparse
import sys
from pathlib import Path
from typing import List, Optional

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RUNS = ('single', 'per-class')  # tests/fixtures/faithfulness_runs: patchconvnet_test_p4 trained on the digits
CALIBRATION_IMAGES = 256  # training images, as tests/test_precision.py
REDUCE_RANGE = {8: False, 7: True}  # weight bits: ONNX Runtime's reduce_range
BATCH = 64
# what numpy's dispatcher found in CPUID, as ONNX Runtime's does: the evidence that QEMU hid AVX-512 and VNNI
CPU_FEATURES = ('AVX2', 'FMA3', 'AVX512F', 'AVX512VNNI', 'AVX512BF16')


def load_run(name: str):
    import timm

    from timm_patchconvnet.model_ref import parse_model_ref

    run = parse_model_ref(str(ROOT / 'tests' / 'fixtures' / 'faithfulness_runs' / name))
    return timm.create_model(run.timm_name, pretrained=True).eval()


def prepare(out: Path) -> None:
    """Natively: each run quantized with 8- and 7-bit weights on 256 training images, and its held-out test images
    preprocessed, as tests/test_precision.py does."""
    import torch
    from timm.data import create_transform, resolve_data_config

    from timm_patchconvnet.data import load_splits
    from timm_patchconvnet.precision import _quantize_int8

    out.mkdir(parents=True, exist_ok=True)
    digits = load_splits('digits', seed=0)  # the split the runs were trained on
    for name in RUNS:
        model = load_run(name)
        transform = create_transform(**resolve_data_config(model=model))
        train, test = (torch.stack([transform(image) for image in split['image']])
                       for split in (digits.train, digits.test))
        np.save(out / f'{name}-inputs.npy', test.numpy())
        for bits, reduce_range in REDUCE_RANGE.items():
            _quantize_int8(model, train[:CALIBRATION_IMAGES].split(64), out / f'{name}-{bits}bit.onnx', reduce_range)
        print(f'{name}: {len(test)} test images, {min(CALIBRATION_IMAGES, len(train))} calibration images')


def run(out: Path, label: str) -> None:
    """ONNX Runtime only (no torch: this is what runs under QEMU): every quantized model on its inputs."""
    import onnxruntime
    try:
        from numpy._core._multiarray_umath import __cpu_features__
    except ImportError:  # numpy 1.x
        from numpy.core._multiarray_umath import __cpu_features__

    found = {feature: __cpu_features__.get(feature, False) for feature in CPU_FEATURES}
    print(f'{label}: CPUID says {found}', flush=True)
    outputs = {}
    for path in sorted(out.glob('*bit.onnx')):
        inputs = np.load(out / f"{path.stem.rsplit('-', 1)[0]}-inputs.npy")
        session = onnxruntime.InferenceSession(str(path), providers=['CPUExecutionProvider'])
        results = [session.run(None, {'input': inputs[i:i + BATCH]}) for i in range(0, len(inputs), BATCH)]
        outputs[f'{path.stem}-logits'] = np.concatenate([logits for logits, _ in results])
        outputs[f'{path.stem}-maps'] = np.concatenate([maps for _, maps in results])
        print(f'{label}: {path.name} on {len(inputs)} images', flush=True)
    np.savez(out / f'outputs-{label}.npz', **outputs)


class Replay:
    """ONNX Runtime's outputs computed in another process (under QEMU), handed to `agreement` batch by batch, in the
    order it asks for them, for exactly the inputs they were computed on."""

    def __init__(self, inputs: np.ndarray, logits: np.ndarray, maps: np.ndarray, single_token: bool):
        self.inputs, self.logits, self.maps, self.single_token = inputs, logits, maps, single_token
        self.start = 0

    def __call__(self, x):
        import torch

        stop = self.start + len(x)
        assert np.array_equal(x.numpy(), self.inputs[self.start:stop]), 'the images are not those run'
        logits, maps = (torch.from_numpy(a[self.start:stop]) for a in (self.logits, self.maps))
        self.start = stop
        return maps.unsqueeze(1) if self.single_token else maps, logits


def compare(out: Path, labels: List[str]) -> None:
    """`agreement` with float32 of each run, weight width and CPU, and how far the CPUs' outputs differ."""
    import torch

    from timm_patchconvnet.precision import InferenceModel, agreement

    outputs = {label: np.load(out / f'outputs-{label}.npz') for label in labels}
    print('| run | weights | CPU | top-1 agreement | map Pearson median | 5th percentile | max abs logit difference '
          f'from {labels[0]} |\n|---|---|---|---|---|---|---|')
    for name in RUNS:
        model = load_run(name)
        inputs = np.load(out / f'{name}-inputs.npy')
        for bits in REDUCE_RANGE:
            key = f'{name}-{bits}bit'
            for label in labels:
                logits, maps = outputs[label][f'{key}-logits'], outputs[label][f'{key}-maps']
                replayed = InferenceModel(model, 'int8', 'onnxruntime',
                                          Replay(inputs, logits, maps, model.class_tokens == 'single'))
                result = agreement(model, replayed, torch.from_numpy(inputs))
                difference = np.abs(logits - outputs[labels[0]][f'{key}-logits']).max()
                print(f'| {name} | {bits}-bit | {label} | {result.top1:.4f} | {result.pearson_median:.4f} | '
                      f'{result.pearson_p5:.4f} | {difference:.3g} |')


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('step', choices=('prepare', 'run', 'compare'))
    parser.add_argument('out', type=Path, help='the folder of models, inputs and outputs')
    parser.add_argument('labels', nargs='*', help='run: the CPU\'s label; compare: the labels, the reference first')
    args = parser.parse_args(argv)
    if args.step == 'prepare':
        prepare(args.out)
    elif not args.labels or (args.step == 'run' and len(args.labels) > 1):
        parser.error(f'{args.step}: give {"one CPU label" if args.step == "run" else "the CPU labels"}')
    elif args.step == 'run':
        run(args.out, args.labels[0])
    else:
        compare(args.out, args.labels)
    return 0


if __name__ == '__main__':
    sys.exit(main())
