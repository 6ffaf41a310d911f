"""Speed and memory of our PatchConvNet models beside timm's resnet50 and, optionally, the official implementation.

    python benchmarks/benchmark.py                                    # ours and resnet50
    python benchmarks/benchmark.py --official /path/to/deit           # and facebookresearch/deit's code
    python benchmarks/benchmark.py --only eval --runtimes eager fused onnxruntime   # ours three ways

Prints one markdown table: inference throughput and latency, training-step throughput, the training step's peak
memory and the activations it saves for backward, parameters and GMACs, and speed ratios against the official
model and resnet50. Every timed measurement runs in a fresh process of this script (`--worker`), so models share
neither allocator state nor peak-memory counters, and the models take turns (A B C, C B A, A B C, ...) so that a
machine that slows down or speeds up penalises none of them; the table gives medians over `--repeats` rounds.
Before timing, each of our models is checked against its official counterpart on the same weights. README.md
explains every column.
"""
import argparse
import contextlib
import functools
import importlib.metadata
import importlib.util
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import timm
import torch
import torch._inductor.config
import torch.nn.functional as F
from timm.optim import create_optimizer_v2
from timm.utils import reparameterize_model
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import timm_patchconvnet
from timm_patchconvnet import checkpoint_filter_fn, export_onnx, fusion
from timm_patchconvnet.errors import EXTRA_PACKAGES, install_hint
from timm_patchconvnet.patchconvnet import STEM_STRIDES
from timm_patchconvnet.precision import PrecisionError, detect_hardware, optimize_for_inference, resolve_precision

BASELINE = 'resnet50'  # the paper's comparison
EVAL_CLASSES = 1000  # ImageNet heads for inference
TRAIN_CLASSES = 10  # CIFAR-10 heads for training
EPOCH_IMAGES = 50_000  # one CIFAR-10 training epoch
OPTIMIZER = {'opt': 'lamb', 'lr': 1e-3, 'weight_decay': 0.05}  # the same for every model
PARITY_BATCH = 2
PARITY_TOL = 1e-4
OFFICIAL_FILE = 'patchconvnet_models.py'
# Our names with an official counterpart: the size gives the constructor (s60 -> S60), the suffix the stem's stride.
OFFICIAL_SIZES = ('s60', 's120', 'b60', 'b120', 'l60', 'l120', 's60_multi')
# The official ConvStem always strides 2 in its four convs (proj[0], [2], [4], [6]); our /8 and /4 stems are the
# same convs with the last one or two at stride 1.
OFFICIAL_STEM_CONVS = (0, 2, 4, 6)
# How our models can run in the inference part: as created, after timm.utils.reparameterize_model, or exported to
# ONNX (timm_patchconvnet.export_onnx) and run by onnxruntime on the CPU.
RUNTIMES = ('eager', 'fused', 'fused-public', 'onnxruntime', 'auto', 'bf16', 'bf16-compiled', 'bf16-openvino', 'int8')
FUSED = ('fused', 'fused-public')  # fused-public: reparameterized, without oneDNN's private fused convolutions
# timm_patchconvnet.optimize_for_inference at a precision (auto: what the device runs natively, on CPU or CUDA,
# compiled with --compile; bf16, int8: CPU), and the bf16 candidates beside it: the same bf16 model under
# torch.compile (inductor, freezing), and its OpenVINO backend (the CPU plugin with bf16 inference precision)
PRECISION_RUNTIMES = ('auto', 'bf16', 'bf16-compiled', 'bf16-openvino', 'int8')
INT8_CALIBRATION = (4, 8)  # batches x images: random images, enough for timing (the tests calibrate on real ones)


class BenchmarkError(RuntimeError):
    """A failure to report in one line (bad input, a failed worker, ours disagreeing with the official model)."""


@dataclass(frozen=True)
class Entry:
    """One model in one part of the benchmark: everything a worker needs to build it."""
    implementation: str  # 'ours', 'official' or 'baseline'
    name: str  # a timm model name, or the official constructor ('S60', ...)
    part: str  # 'eval' or 'train'
    img_size: int
    patch: int = 16  # official models only: the stem's total stride
    grad_checkpointing: bool = False
    runtime: str = 'eager'  # ours in the inference part: one of RUNTIMES

    @property
    def label(self) -> str:
        if self.implementation == 'official':
            return f'official {self.name}' + (f' /{self.patch} stem' if self.patch != 16 else '')
        runtime = '' if self.runtime == 'eager' else f' ({self.runtime})'
        return self.name + runtime + (' + grad checkpointing' if self.grad_checkpointing else '')

    @property
    def num_classes(self) -> int:
        return EVAL_CLASSES if self.part == 'eval' else TRAIN_CLASSES


# ---------------------------------------------------------------------------------------------------------------
# Command line


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f'{text} is not a positive integer')
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f'{text} is negative')
    return value


def available_cores() -> int:
    # The cores this process may run on (a container or taskset can allow fewer than the machine has).
    return len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count() or 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     epilog='Columns and method: benchmarks/README.md')
    parser.add_argument('--official', metavar='PATH',
                        help=f'a checkout of github.com/facebookresearch/deit: also benchmark its {OFFICIAL_FILE}')
    parser.add_argument('--models', nargs='+', default=['patchconvnet_s60_p16'], metavar='NAME',
                        help='our timm models for the inference part (default: patchconvnet_s60_p16)')
    parser.add_argument('--train-model', default='patchconvnet_s60_p4', metavar='NAME',
                        help='our timm model for the training part (default: patchconvnet_s60_p4)')
    parser.add_argument('--img-size', type=positive_int, default=224, help='inference input size (default: 224)')
    parser.add_argument('--batch-size', type=positive_int, default=32,
                        help='inference batch for throughput; latency is at batch 1 (default: 32)')
    parser.add_argument('--train-img-size', type=positive_int, default=32, help='training input size (default: 32)')
    parser.add_argument('--train-batch-size', type=positive_int, default=64, help='training batch (default: 64)')
    parser.add_argument('--repeats', type=positive_int, default=5,
                        help='rounds; each runs every model once in a fresh process (default: 5)')
    parser.add_argument('--warmup', type=non_negative_int, default=3,
                        help='untimed iterations before timing, in each process (default: 3)')
    parser.add_argument('--iters', type=positive_int, default=10,
                        help='timed iterations in each process, of each batch size or step (default: 10)')
    parser.add_argument('--threads', type=positive_int, default=available_cores(),
                        help=f'torch CPU threads (default: all available cores, here {available_cores()})')
    parser.add_argument('--device', choices=('cpu', 'cuda'), default='cpu')
    parser.add_argument('--dtype', choices=('float32', 'bfloat16'), default='float32',
                        help='bfloat16 runs the forward passes under torch.autocast (default: float32)')
    parser.add_argument('--channels-last', action='store_true', help='channels-last models and inputs')
    parser.add_argument('--compile', action='store_true',
                        help="torch.compile every model (ours, official, resnet50); inference with inductor's "
                             'freezing (weights as constants)')
    parser.add_argument('--fuse', action='store_true',
                        help='inference part: time our models after timm.utils.reparameterize_model (ConvBlock.fuse: '
                             'layer scale and norm affine folded, GELU and residual add fused into oneDNN convs); '
                             'the same as --runtimes fused')
    parser.add_argument('--runtimes', nargs='+', choices=RUNTIMES, metavar='RUNTIME',
                        help='inference part: one row of each of our models per runtime, ' + ', '.join(RUNTIMES) +
                             ' (exported by timm_patchconvnet.export_onnx; float32 on the CPU; not compiled by '
                             '--compile) (default: eager)')
    parser.add_argument('--grad-checkpointing', action='store_true',
                        help='training part: add a row for the train model with gradient checkpointing')
    parser.add_argument('--epoch', action='store_true',
                        help=f'also time one CIFAR-10-sized epoch ({EPOCH_IMAGES} random images) of the train model')
    parser.add_argument('--only', choices=('eval', 'train'), help='run one part only')
    parser.add_argument('--json', metavar='PATH', help='also write every measurement to this JSON file')
    parser.add_argument('--worker', help=argparse.SUPPRESS)  # internal: one measurement, JSON on stdout
    return parser


def usage_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with the options, in words, or None."""
    if args.official and not Path(args.official, OFFICIAL_FILE).is_file():
        return (f'--official {args.official}: no {OFFICIAL_FILE} there; give the folder of a checkout of '
                'https://github.com/facebookresearch/deit')
    if args.device == 'cuda' and not torch.cuda.is_available():
        return '--device cuda: torch sees no CUDA device (torch.cuda.is_available() is False)'
    for name in [*args.models, args.train_model]:
        if not timm.is_model(name):
            return f'{name} is not a timm model; ours are: {", ".join(timm.list_models("patchconvnet_*"))}'
    if args.only == 'eval' and (args.grad_checkpointing or args.epoch):
        return '--grad-checkpointing and --epoch belong to the training part, which --only eval skips'
    if args.only == 'train' and (args.fuse or args.runtimes):
        return '--fuse and --runtimes belong to the inference part, which --only train skips'
    if args.fuse and args.runtimes:
        return '--fuse is --runtimes fused: give one of them'
    if 'onnxruntime' in eval_runtimes(args):
        if args.device != 'cpu' or args.dtype != 'float32':
            return '--runtimes onnxruntime runs float32 on the CPU: not with --device cuda or --dtype bfloat16'
        missing = [name for name in EXTRA_PACKAGES['onnx'] if importlib.util.find_spec(name) is None]
        if missing:
            return f"--runtimes onnxruntime needs {', '.join(missing)}: {install_hint('onnx')}"
    return precision_runtimes_problem(args) or other_usage_problem(args)


def precision_runtimes_problem(args: argparse.Namespace) -> str | None:
    """Why the bf16 or int8 runtimes asked for cannot run here (CPU, float32 inputs, the hardware, the packages)."""
    asked = [runtime for runtime in eval_runtimes(args) if runtime in PRECISION_RUNTIMES and runtime != 'auto']
    if not asked:
        return None
    if args.device != 'cpu' or args.dtype != 'float32':
        return f"--runtimes {' '.join(asked)} run on the CPU from float32 inputs: not with --device cuda or --dtype"
    hardware = detect_hardware('cpu')
    for runtime in asked:
        try:
            resolve_precision(runtime.split('-')[0], hardware)
        except PrecisionError as err:
            return f'--runtimes {runtime}: {err}'
    if 'bf16-openvino' in asked and importlib.util.find_spec('openvino') is None:
        return '--runtimes bf16-openvino needs openvino (pip install openvino)'
    if 'int8' in asked and importlib.util.find_spec('onnxruntime') is None:
        return f"--runtimes int8 needs onnxruntime: {install_hint('onnx')}"
    return None


def other_usage_problem(args: argparse.Namespace) -> str | None:
    """The problems of --official and --json."""
    names = sorted({name for names in part_models(args).values() for name in names})
    if args.official and not any(official_counterpart(name) for name in names):
        return (f'--official: none of {", ".join(names)} has an official counterpart '
                f'(patchconvnet_{{{",".join(OFFICIAL_SIZES)}}}_p{{16,8,4}})')
    if args.json and not Path(args.json).resolve().parent.is_dir():
        return f'--json {args.json}: its folder does not exist'
    return None


def eval_runtimes(args: argparse.Namespace) -> list[str]:
    """The runtimes of our models in the inference part, in row order (deduplicated)."""
    return list(dict.fromkeys(args.runtimes or ['fused' if args.fuse else 'eager']))


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.worker is None:  # workers get the command line the parent already checked
        problem = usage_problem(args)
        if problem:
            parser.error(problem)
    return args


# ---------------------------------------------------------------------------------------------------------------
# Models


@contextlib.contextmanager
def legacy_timm_modules() -> Iterator[None]:
    """Let the official file's imports of old timm paths resolve, for the duration of its import.

    `timm.models.efficientnet_blocks` is gone (now `_efficientnet_blocks`), `timm.models.layers` is deprecated
    (`timm.layers`), and `timm.models.registry.register_model` would put 'S60', 'S120', ... into timm's own
    registry; a stand-in registry whose decorator does nothing keeps them out. The previous modules come back after.
    """
    registry = types.ModuleType('timm.models.registry')
    registry.register_model = lambda fn: fn
    aliases = {
        'timm.models.efficientnet_blocks': importlib.import_module('timm.models._efficientnet_blocks'),
        'timm.models.layers': importlib.import_module('timm.layers'),
        'timm.models.registry': registry,
    }
    previous = {name: sys.modules.get(name) for name in aliases}
    sys.modules.update(aliases)
    try:
        yield
    finally:
        for name, module in previous.items():
            if module is None:
                del sys.modules[name]
            else:
                sys.modules[name] = module


@functools.cache
def load_official(checkout: str) -> types.ModuleType:
    """The official patchconvnet_models.py of a deit checkout, imported as a module that is not in sys.modules."""
    path = Path(checkout, OFFICIAL_FILE)
    spec = importlib.util.spec_from_file_location('deit_patchconvnet_models', path)
    module = importlib.util.module_from_spec(spec)
    try:
        with legacy_timm_modules():
            spec.loader.exec_module(module)
    except Exception as err:
        raise BenchmarkError(f'cannot import {path}: {type(err).__name__}: {err}') from err
    return module


def official_counterpart(name: str) -> tuple[str, int] | None:
    """(official constructor, stem stride) computing what our model `name` computes, or None."""
    for size in OFFICIAL_SIZES:
        for patch in STEM_STRIDES:
            if name == f'patchconvnet_{size}_p{patch}':
                return size[0].upper() + size[1:], patch
    return None


def build_model(entry: Entry, official: str | None) -> nn.Module:
    """The entry's model with fresh weights, on the default device."""
    if entry.implementation == 'official':
        module = load_official(official)
        if not hasattr(module, entry.name):
            raise BenchmarkError(f'{module.__file__} defines no {entry.name}(): is {official} a deit checkout?')
        model = getattr(module, entry.name)(num_classes=entry.num_classes)
        for index, stride in zip(OFFICIAL_STEM_CONVS, STEM_STRIDES[entry.patch]):
            model.patch_embed.proj[index][0].stride = (stride, stride)
        # S60_multi's pooling keeps its default of 1000 class tokens whatever num_classes is: give it the real count.
        for block in model.blocks_token_only:
            if hasattr(block.attn, 'num_classes'):
                block.attn.num_classes = entry.num_classes
        return model
    model = timm.create_model(entry.name, num_classes=entry.num_classes)
    if entry.grad_checkpointing:
        model.set_grad_checkpointing(True)
    return model


def count_params_and_macs(entry: Entry, official: str | None) -> tuple[float, float]:
    """Millions of parameters and GMACs per image, counted on the meta device (no weights made, nothing run).

    MACs are torch.utils.flop_counter's FLOPs / 2 (convolutions, linears, matmuls), as in model_table.py.
    """
    with torch.device('meta'):
        model = build_model(entry, official).eval()
        image = torch.empty(1, 3, entry.img_size, entry.img_size)
    with FlopCounterMode(display=False) as counter:
        model(image)
    return sum(p.numel() for p in model.parameters()) / 1e6, counter.get_total_flops() / 2e9


@torch.no_grad()
def check_parity(ours_entry: Entry, official_entry: Entry, args: argparse.Namespace) -> dict:
    """Load the official model's weights into ours and compare outputs (CPU, float32, eval mode).

    The official initialisation leaves the layer scales at 1e-4 or 1e-6, which would hide almost any difference in
    the trunk blocks, so every official parameter is first perturbed by N(0, 0.02) noise.
    """
    torch.manual_seed(0)
    official = build_model(official_entry, args.official).eval()
    for param in official.parameters():
        param.add_(torch.randn_like(param) * 0.02)
    ours = build_model(ours_entry, args.official).eval()
    ours.load_state_dict(checkpoint_filter_fn(official.state_dict(), ours), strict=True)
    if ours_entry.runtime in FUSED:
        ours = reparameterize_model(ours)
    images = torch.randn(PARITY_BATCH, 3, ours_entry.img_size, ours_entry.img_size)
    expected = official(images)
    onednn = fusion.ONEDNN_POST_OPS
    fusion.ONEDNN_POST_OPS = onednn and ours_entry.runtime != 'fused-public'
    try:
        diff = (ours(images) - expected).abs().max().item()
    finally:
        fusion.ONEDNN_POST_OPS = onednn
    if not diff <= PARITY_TOL:  # also catches NaN
        raise BenchmarkError(f'{ours_entry.label} and {official_entry.label} disagree at {ours_entry.img_size}x'
                             f'{ours_entry.img_size}: max |difference| {diff:.3g} > {PARITY_TOL}')
    return {'ours': ours_entry.label, 'official': official_entry.label, 'img_size': ours_entry.img_size,
            'fused': ours_entry.runtime in FUSED, 'max_abs_diff': diff,
            'max_abs_output': expected.abs().max().item()}


def onnx_session(path: str, threads: int):
    """An onnxruntime CPU session of the ONNX file, with the thread count the torch rows get."""
    import onnxruntime  # only where the onnxruntime rows are asked for: an optional dependency

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads  # as torch.set_num_threads for the other rows
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(path, options, providers=['CPUExecutionProvider'])


@torch.no_grad()
def prepare_onnx(entry: Entry, args: argparse.Namespace, path: str) -> dict:
    """Export the entry's model to `path` once for every round (as a worker builds it: seed 0, fresh weights) and
    check that onnxruntime computes what the eager model computes on it."""
    torch.manual_seed(0)
    model = build_model(entry, args.official).eval()
    start = time.perf_counter()
    export_onnx(model, path, img_size=entry.img_size, attention=False)  # the logits, as the other rows compute
    export_s = time.perf_counter() - start
    images = torch.randn(PARITY_BATCH, 3, entry.img_size, entry.img_size)
    expected = model(images)
    (logits,) = onnx_session(path, args.threads).run(None, {'input': images.numpy()})
    diff = (torch.from_numpy(logits) - expected).abs().max().item()
    if not diff <= PARITY_TOL:  # also catches NaN
        raise BenchmarkError(f'{entry.label} and the eager model disagree at {entry.img_size}x{entry.img_size}: '
                             f'max |difference| {diff:.3g} > {PARITY_TOL}')
    return {'model': entry.label, 'img_size': entry.img_size, 'export_s': export_s,
            'file_mib': Path(path).stat().st_size / 2 ** 20, 'max_abs_diff': diff,
            'max_abs_output': expected.abs().max().item()}


# ---------------------------------------------------------------------------------------------------------------
# Measurements (in a worker process)


def rss_bytes() -> int | None:
    statm = Path('/proc/self/statm')  # Linux: size, resident, ... in pages
    return int(statm.read_text().split()[1]) * os.sysconf('SC_PAGE_SIZE') if statm.exists() else None


def reset_peak_rss() -> bool:
    """Set this process's peak RSS (VmHWM) to its current RSS; Linux >= 4.0, False where not allowed."""
    try:
        Path('/proc/self/clear_refs').write_text('5')
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int:
    for line in Path('/proc/self/status').read_text().splitlines():
        if line.startswith('VmHWM:'):
            return int(line.split()[1]) * 1024
    raise BenchmarkError('/proc/self/status has no VmHWM line')


class PeakMemory:
    """Peak memory above what the process held when `start` was called (weights, batch, runtime)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.base = None
        self.peak_was_reset = True

    def start(self) -> None:
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self.base = rss_bytes()
            # Without the reset the peak is the process's lifetime peak: an upper bound that includes model set-up.
            self.peak_was_reset = self.base is not None and reset_peak_rss()

    def above_start(self) -> int | None:
        if self.base is None:
            return None
        if self.device.type == 'cuda':
            return torch.cuda.max_memory_allocated(self.device) - self.base
        return peak_rss_bytes() - self.base


def saved_activation_bytes(model: nn.Module, images: torch.Tensor, autocast: contextlib.AbstractContextManager) -> int:
    """Bytes of the distinct storages autograd saves for backward in one training forward; weights not counted.

    Exact and machine-independent. Every saved tensor is kept until the forward ends, so no storage can be freed
    and its address reused by another; views of one storage count once.
    """
    weights = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    saved: dict[int, int] = {}
    kept: list[torch.Tensor] = []

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in weights:
            saved[storage.data_ptr()] = storage.nbytes()
        kept.append(tensor)
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor), autocast:
        model(images)
    return sum(saved.values())


def timed(step: Callable[[], None], iters: int, sync: Callable[[], None]) -> list[float]:
    """Seconds of each of `iters` calls of `step`, waiting for the device to finish each."""
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    return times


class KernelWork:
    """Minor page faults and system CPU seconds per iteration of a timed loop (getrusage of this process).

    Each fault is a fresh page the kernel maps and zeroes: on CPU, tensors too large for malloc to keep are
    returned to the kernel when freed and faulted in again at the next allocation, which costs time that no
    operator's kernel shows.
    """

    def __enter__(self) -> 'KernelWork':
        self.before = resource.getrusage(resource.RUSAGE_SELF)
        return self

    def __exit__(self, *exc_info) -> None:
        self.after = resource.getrusage(resource.RUSAGE_SELF)

    def per_iter(self, iters: int) -> dict:
        return {'page_faults': (self.after.ru_minflt - self.before.ru_minflt) / iters,
                'system_s': (self.after.ru_stime - self.before.ru_stime) / iters}


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor, targets: torch.Tensor,
               autocast: contextlib.AbstractContextManager) -> None:
    with autocast:
        loss = F.cross_entropy(model(images), targets)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


class Bench:
    """One worker's model, ready to run as the options say, and the device helpers around it."""

    def __init__(self, entry: Entry, args: argparse.Namespace, onnx_file: str | None = None):
        self.entry = entry
        self.args = args
        self.device = torch.device(args.device)
        self.channels_last = args.channels_last and entry.runtime != 'onnxruntime'
        if entry.runtime in PRECISION_RUNTIMES:  # inference only; each prepares its own input layout and dtype
            model = build_model(entry, args.official).eval().to(self.device)
            self.model = self.run = precision_runtime(model, entry, args)
            return
        if entry.runtime == 'onnxruntime':  # the parent exported the model once (prepare_onnx)
            session = onnx_session(onnx_file, args.threads)
            self.model = self.run = lambda images: session.run(None, {'input': images.numpy()})
            return
        model = build_model(entry, args.official).train(entry.part == 'train')
        if entry.runtime in FUSED:
            fusion.ONEDNN_POST_OPS = entry.runtime == 'fused'  # a process of its own: nothing else sees it
            model = reparameterize_model(model)
        model = model.to(self.device)
        self.model = model.to(memory_format=torch.channels_last) if args.channels_last else model
        if args.compile and entry.part == 'eval':
            # inference only: the weights are constants, so inductor may prepack them for oneDNN and fold them
            torch._inductor.config.freezing = True
        # The eager module stays at hand: the optimizer and the saved-activation count use it, not a compiled one.
        self.run = torch.compile(self.model, dynamic=False) if args.compile else self.model

    def autocast(self) -> contextlib.AbstractContextManager:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.args.dtype == 'bfloat16')

    def sync(self) -> None:
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)

    def images(self, batch: int) -> torch.Tensor:
        images = torch.randn(batch, 3, self.entry.img_size, self.entry.img_size, device=self.device)
        return images.contiguous(memory_format=torch.channels_last) if self.channels_last else images

    def targets(self, batch: int) -> torch.Tensor:
        return torch.randint(0, TRAIN_CLASSES, (batch,), device=self.device)

    def optimizer(self) -> torch.optim.Optimizer:
        return create_optimizer_v2(self.model, **OPTIMIZER)

    @torch.inference_mode()
    def measure_eval(self) -> dict:
        batch = self.images(self.args.batch_size)
        single = batch[:1]

        def infer(images: torch.Tensor) -> None:
            with self.autocast():
                self.run(images)

        for images in (batch, single):  # both shapes: with --compile each is its own graph
            for _ in range(self.args.warmup):
                infer(images)
        self.sync()
        with KernelWork() as kernel:
            batch_times = timed(lambda: infer(batch), self.args.iters, self.sync)
        single_times = timed(lambda: infer(single), self.args.iters, self.sync)
        return {'eval_img_s': len(batch) * len(batch_times) / sum(batch_times),
                'latency_ms': 1000 * statistics.median(single_times), **kernel.per_iter(self.args.iters)}

    def measure_train(self, count_saved: bool) -> dict:
        optimizer = self.optimizer()
        images, targets = self.images(self.args.train_batch_size), self.targets(self.args.train_batch_size)
        memory = PeakMemory(self.device)
        memory.start()  # before the first step: gradients and optimizer state count, as they only exist for training
        for _ in range(self.args.warmup):
            train_step(self.run, optimizer, images, targets, self.autocast())
        self.sync()
        with KernelWork() as kernel:
            times = timed(lambda: train_step(self.run, optimizer, images, targets, self.autocast()),
                          self.args.iters, self.sync)
        peak = memory.above_start()
        result = {'train_img_s': len(images) * len(times) / sum(times),
                  'peak_train_mib': None if peak is None else peak / 2 ** 20,
                  'peak_was_reset': memory.peak_was_reset, **kernel.per_iter(self.args.iters)}
        if count_saved:  # after the timing and the peak, which the extra forward must not disturb
            result['saved_mib'] = saved_activation_bytes(self.model, images, self.autocast()) / 2 ** 20
        return result

    def measure_epoch(self) -> dict:
        """One CIFAR-10-sized epoch of training steps on one random batch (and its slice for the last, short one)."""
        optimizer = self.optimizer()
        batch = self.args.train_batch_size
        images, targets = self.images(batch), self.targets(batch)
        full_steps, rest = divmod(EPOCH_IMAGES, batch)
        shapes = [batch] + ([rest] if rest else [])
        for size in shapes:  # warm up the short batch's shape too: with --compile it is a second graph
            for _ in range(self.args.warmup):
                train_step(self.run, optimizer, images[:size], targets[:size], self.autocast())
        self.sync()
        start = time.perf_counter()
        for size in [batch] * full_steps + shapes[1:]:
            train_step(self.run, optimizer, images[:size], targets[:size], self.autocast())
        self.sync()
        return {'epoch_s': time.perf_counter() - start, 'images': EPOCH_IMAGES, 'steps': full_steps + bool(rest)}


def precision_runtime(model: nn.Module, entry: Entry, args: argparse.Namespace) -> Callable[[torch.Tensor], object]:
    """The entry's model as one of PRECISION_RUNTIMES runs it."""
    if entry.runtime == 'int8':
        batches, images = INT8_CALIBRATION
        calibration = [torch.randn(images, 3, entry.img_size, entry.img_size) for _ in range(batches)]
        return optimize_for_inference(model, 'int8', calibration=calibration)
    if entry.runtime == 'bf16-openvino':
        return optimize_for_inference(model, 'bf16', backend='openvino')
    if entry.runtime == 'auto':  # the default backend: OpenVINO for bf16 on the CPU where it is installed
        optimized = optimize_for_inference(model, 'auto', backend='torch' if args.compile else None)
    else:
        optimized = optimize_for_inference(model, 'bf16', backend='torch')
    if entry.runtime == 'bf16-compiled' or (entry.runtime == 'auto' and args.compile):  # torch.compile: torch's
        torch._inductor.config.freezing = True  # weights as constants: inductor prepacks them for oneDNN
        return torch.compile(optimized.runner, dynamic=False)
    return optimized


def device_name(device: torch.device) -> str:
    return f'cuda ({torch.cuda.get_device_name(device)})' if device.type == 'cuda' else 'cpu'


def run_worker(args: argparse.Namespace) -> dict:
    job = json.loads(args.worker)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.device == 'cuda':
        torch.backends.cudnn.benchmark = True  # every model gets cuDNN's fastest kernels for its fixed shapes
    bench = Bench(Entry(**job['entry']), args, job.get('onnx_file'))
    if job['task'] == 'eval':
        result = bench.measure_eval()
    elif job['task'] == 'train':
        result = bench.measure_train(count_saved=job['count_saved'])
    else:
        result = bench.measure_epoch()
    return dict(result, device_name=device_name(bench.device))


# ---------------------------------------------------------------------------------------------------------------
# Orchestration (in the parent process)


def part_models(args: argparse.Namespace) -> dict[str, list[str]]:
    parts = {'eval': list(args.models), 'train': [args.train_model]}
    return {part: names for part, names in parts.items() if args.only in (None, part)}


def plan_part(part: str, names: list[str], args: argparse.Namespace) -> list[Entry]:
    """The part's models in running order: each of ours, its checkpointed twin and official counterpart; resnet50."""
    img_size = args.img_size if part == 'eval' else args.train_img_size
    entries = []
    for name in names:
        if part == 'eval':
            entries += [Entry('ours', name, part, img_size, runtime=runtime) for runtime in eval_runtimes(args)]
        else:
            entries.append(Entry('ours', name, part, img_size))
        if part == 'train' and args.grad_checkpointing:
            entries.append(Entry('ours', name, part, img_size, grad_checkpointing=True))
        counterpart = official_counterpart(name)
        if args.official and counterpart:
            entries.append(Entry('official', counterpart[0], part, img_size, patch=counterpart[1]))
    entries.append(Entry('baseline', BASELINE, part, img_size))
    return list(dict.fromkeys(entries))  # a model named twice is measured once


def references(entry: Entry, entries: list[Entry]) -> dict[str, Entry | None]:
    """The rows `entry` is compared with: its official counterpart (ours only), resnet50 (all but resnet50) and
    the eager row of the same model (ours in another runtime)."""
    counterpart = official_counterpart(entry.name) if entry.implementation == 'ours' else None
    official = next((e for e in entries if e.implementation == 'official' and (e.name, e.patch) == counterpart), None)
    baseline = next(e for e in entries if e.implementation == 'baseline') if entry.implementation != 'baseline' else None
    eager = replace(entry, runtime='eager')
    return {'official': official, 'baseline': baseline,
            'eager': eager if entry.runtime != 'eager' and eager in entries else None}


def run_in_worker(argv: list[str], args: argparse.Namespace, job: dict) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), *argv, '--worker', json.dumps(job)]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))  # libraries outside torch get the same thread count
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    lines = done.stdout.strip().splitlines()
    if done.returncode or not lines:
        raise BenchmarkError(f'{Entry(**job["entry"]).label}: the {job["task"]} worker failed '
                             f'(exit {done.returncode}):\n{done.stderr[-4000:]}')
    return json.loads(lines[-1])  # the result is the last line: libraries may print before it


def run_rounds(argv: list[str], args: argparse.Namespace, entries: list[Entry],
               onnx_files: dict[Entry, str] | None = None) -> dict[Entry, list[dict]]:
    """Every entry once per round in a fresh process; the order flips each round (A B C, C B A, ...)."""
    results: dict[Entry, list[dict]] = {entry: [] for entry in entries}
    for round_index in range(args.repeats):
        for entry in entries if round_index % 2 == 0 else entries[::-1]:
            # Saved activations are the same every round: count them once.
            job = {'task': entry.part, 'entry': asdict(entry), 'count_saved': round_index == 0}
            if onnx_files and entry in onnx_files:
                job['onnx_file'] = onnx_files[entry]
            result = run_in_worker(argv, args, job)
            results[entry].append(result)
            speed = result.get('eval_img_s') or result['train_img_s']
            print(f'[{entry.part} {round_index + 1}/{args.repeats}] {entry.label} @{entry.img_size}: '
                  f'{speed:.1f} img/s', file=sys.stderr, flush=True)
    return results


def median_of(rounds: list[dict], key: str) -> float | None:
    values = [r[key] for r in rounds if r.get(key) is not None]
    return statistics.median(values) if values else None


def speed_ratio(rounds: list[dict], reference: list[dict], key: str) -> float:
    """Median over rounds of this round's throughput over the reference's in the same round (> 1: faster)."""
    return statistics.median(mine[key] / theirs[key] for mine, theirs in zip(rounds, reference))


def best_ratio(rounds: list[dict], reference: list[dict], key: str) -> float:
    """Best round over the reference's best round: interference from other work only ever slows a process down,
    so on a shared machine the fastest round is the nearest to each model's undisturbed speed."""
    return max(r[key] for r in rounds) / max(r[key] for r in reference)


def make_rows(results: dict[Entry, list[dict]], counts: dict[Entry, tuple[float, float]]) -> list[dict]:
    """One row per model and part: medians over rounds, and speed ratios to the references in the same part."""
    rows = []
    for entry, rounds in results.items():
        same_part = [e for e in results if e.part == entry.part]
        speed = f'{entry.part}_img_s'
        ratios = {kind: None if reference is None else speed_ratio(rounds, results[reference], speed)
                  for kind, reference in references(entry, same_part).items()}
        official = references(entry, same_part)['official']
        best_vs_official = None if official is None else best_ratio(rounds, results[official], speed)
        peaks = [r['peak_train_mib'] for r in rounds if r.get('peak_train_mib') is not None]
        rows.append({
            'model': entry.label, 'part': entry.part, 'img_size': entry.img_size, 'classes': entry.num_classes,
            'params_m': counts[entry][0], 'gmacs': counts[entry][1],
            'eval_img_s': median_of(rounds, 'eval_img_s'), 'latency_ms': median_of(rounds, 'latency_ms'),
            'train_img_s': median_of(rounds, 'train_img_s'),
            'peak_train_mib': max(peaks, default=None),  # the worst round
            'saved_mib': rounds[0].get('saved_mib'), 'page_faults': median_of(rounds, 'page_faults'),
            'vs_official': ratios['official'], 'best_vs_official': best_vs_official, 'vs_baseline': ratios['baseline'],
            'vs_eager': ratios['eager'],
        })
    return rows


def cpu_model() -> str:
    cpuinfo = Path('/proc/cpuinfo')
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith('model name'):
                return line.split(':', 1)[1].strip()
    return platform.processor() or platform.machine()


def git_commit(folder: str) -> str | None:
    command = ['git', '-C', folder, 'rev-parse', '--short', 'HEAD']
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    return done.stdout.strip() if done.returncode == 0 else None


def on_off(flag: bool) -> str:
    return 'on' if flag else 'off'


def table_columns(args: argparse.Namespace) -> list[tuple[str, Callable[[dict], str]]]:
    """(header, cell of a row) of each column; the columns of a part that did not run are left out."""
    def number(key: str, digits: str) -> Callable[[dict], str]:
        return lambda row: '-' if row[key] is None else format(row[key], digits)

    columns = [('model', lambda row: row['model']), ('input', lambda row: str(row['img_size'])),
               ('classes', lambda row: str(row['classes'])), ('params (M)', number('params_m', '.2f')),
               ('GMACs', number('gmacs', '.3g'))]
    if args.only != 'train':
        columns += [(f'eval img/s @{args.batch_size}', number('eval_img_s', '.1f')),
                    ('latency ms @1', number('latency_ms', '.2f'))]
    if args.only != 'eval':
        columns += [(f'train img/s @{args.train_batch_size}', number('train_img_s', '.1f')),
                    ('peak train mem (MiB)', number('peak_train_mib', '.1f')),
                    ('saved activations (MiB)', number('saved_mib', '.1f'))]
    columns.append(('page faults /iter', number('page_faults', '.0f')))
    if args.official:
        columns += [('vs official', number('vs_official', '.2f')),
                    ('best vs best official', number('best_vs_official', '.2f'))]
    columns.append((f'vs {BASELINE}', number('vs_baseline', '.2f')))
    if args.only != 'train' and 'eager' in eval_runtimes(args) and len(eval_runtimes(args)) > 1:
        columns.append(('vs eager', number('vs_eager', '.2f')))
    return columns


def report(args: argparse.Namespace, environment: dict, parity: list[dict], rows: list[dict],
           epoch: dict | None, onnx: list[dict] = ()) -> str:
    lines = [
        '## PatchConvNet benchmark',
        '',
        (f"- torch {environment['torch']}, timm {environment['timm']}, timm_patchconvnet "
         f"{environment['timm_patchconvnet']}, Python {environment['python']}"),
        (f"- device: {environment['device_name']}; CPU: {environment['cpu']}, {args.threads} torch threads, "
         f"load average {environment['load_average']} at start"),
        (f"- dtype {args.dtype}{' (autocast)' if args.dtype != 'float32' else ''}; channels-last "
         f"{on_off(args.channels_last)}; torch.compile {on_off(args.compile)}"),
    ]
    if args.only != 'train':
        lines.append(f'- inference: batch {args.batch_size} at {args.img_size}x{args.img_size}, latency at batch 1, '
                     f"{EVAL_CLASSES} classes, torch.inference_mode; our models run {', '.join(eval_runtimes(args))}"
                     + (' (fused: timm.utils.reparameterize_model)' if 'fused' in eval_runtimes(args) else ''))
    if args.only != 'eval':
        lines.append(f'- training step: batch {args.train_batch_size} at {args.train_img_size}x{args.train_img_size}, '
                     f"{TRAIN_CLASSES} classes, cross-entropy, timm {OPTIMIZER['opt']} (lr {OPTIMIZER['lr']}, "
                     f"weight decay {OPTIMIZER['weight_decay']})")
    lines.append(f'- timing: {args.repeats} round(s), each running every model in a fresh process (order A B C, '
                 f'C B A, ...) for {args.warmup} warm-up then {args.iters} timed iteration(s); medians over rounds')
    if args.official:
        lines.append(f"- official: {args.official} (commit {environment['official_commit'] or 'unknown'})")
    for check in parity:
        lines.append(f"- max |ours - official| ({check['ours']}{' fused' if check['fused'] else ''} vs "
                     f"{check['official']}, {check['img_size']}x{check['img_size']}, float32, batch {PARITY_BATCH}, "
                     f"same weights): {check['max_abs_diff']:.3g} (outputs up to {check['max_abs_output']:.3g})")
    for check in onnx:
        lines.append(f"- {check['model']}: exported once by timm_patchconvnet.export_onnx (torch.onnx, dynamo) in "
                     f"{check['export_s']:.1f} s, {check['file_mib']:.1f} MiB; onnxruntime "
                     f"{environment['onnxruntime']} CPUExecutionProvider, {args.threads} intra-op threads; "
                     f"max |onnxruntime - eager| ({check['img_size']}x{check['img_size']}, float32, batch "
                     f"{PARITY_BATCH}): {check['max_abs_diff']:.3g} (outputs up to {check['max_abs_output']:.3g})")
    columns = table_columns(args)
    lines += ['', '| ' + ' | '.join(header for header, _ in columns) + ' |', '|---' * len(columns) + '|']
    lines += ['| ' + ' | '.join(show(row) for _, show in columns) + ' |' for row in rows]
    lines += ['', ("vs columns: the row's throughput (eval or train) over that model's (vs eager: our same model "
                   "run eagerly), the median over rounds of each round's ratio (> 1: faster); best vs best official: "
                   "the row's fastest round over the official model's fastest round (other work on the machine only "
                   "ever slows a round down).")]
    if not environment['peak_was_reset']:
        lines.append("peak train mem: the peak RSS could not be reset, so it is the process's lifetime peak above "
                     'the memory before the first step (an upper bound).')
    if epoch:
        lines.append(f"one epoch of {epoch['model']} ({epoch['images']} random {args.train_img_size}x"
                     f"{args.train_img_size} images, {epoch['steps']} steps of batch {args.train_batch_size}): "
                     f"{epoch['epoch_s']:.1f} s")
    return '\n'.join(lines)


def benchmark(argv: list[str], args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)  # for the parity checks run here
    # How busy the machine was: timings from a loaded machine are not worth comparing across runs.
    load_average = f'{os.getloadavg()[0]:.2f}' if hasattr(os, 'getloadavg') else 'unknown'
    plans = {part: plan_part(part, names, args) for part, names in part_models(args).items()}
    entries = [entry for plan in plans.values() for entry in plan]

    parity = []
    for plan in plans.values():
        # An onnxruntime row's eager model is compared with the official one here (once), onnxruntime with eager
        # in prepare_onnx.
        for entry in dict.fromkeys(replace(e, runtime='eager') if e.runtime == 'onnxruntime' or
                                   e.runtime in PRECISION_RUNTIMES else e for e in plan):
            official = references(entry, plan)['official']
            if official is not None and not entry.grad_checkpointing:
                parity.append(check_parity(entry, official, args))
    # Gradient checkpointing changes neither the parameters nor the MACs of the forward, nor does the runtime.
    counts = {entry: count_params_and_macs(replace(entry, grad_checkpointing=False), args.official)
              for entry in entries}

    results: dict[Entry, list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix='patchconvnet-onnx-') as folder:
        onnx_files = {entry: str(Path(folder, f'{entry.name}_{entry.img_size}.onnx'))
                      for entry in entries if entry.runtime == 'onnxruntime'}
        onnx = [prepare_onnx(entry, args, path) for entry, path in onnx_files.items()]
        for plan in plans.values():
            results.update(run_rounds(argv, args, plan, onnx_files))
    epoch = None
    if args.epoch:
        entry = Entry('ours', args.train_model, 'train', args.train_img_size)
        epoch = dict(run_in_worker(argv, args, {'task': 'epoch', 'entry': asdict(entry)}), model=entry.label)

    first = next(iter(results.values()))[0]
    environment = {
        'device_name': first['device_name'], 'cpu': cpu_model(), 'load_average': load_average,
        'official_commit': git_commit(args.official) if args.official else None,
        'peak_was_reset': all(r.get('peak_was_reset', True) for rounds in results.values() for r in rounds),
        'torch': torch.__version__, 'timm': timm.__version__, 'timm_patchconvnet': timm_patchconvnet.__version__,
        'python': platform.python_version(),
        'onnxruntime': importlib.metadata.version('onnxruntime') if onnx else None}
    rows = make_rows(results, counts)
    print(report(args, environment, parity, rows, epoch, onnx))
    rounds = [{'entry': asdict(e), 'label': e.label, 'results': r} for e, r in results.items()]
    settings = {k: v for k, v in vars(args).items() if k != 'worker'}
    return {'settings': settings, 'environment': environment, 'parity': parity, 'onnx': onnx, 'rows': rows,
            'rounds': rounds, 'epoch': epoch}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    try:
        if args.worker is not None:
            print(json.dumps(run_worker(args)))
            return
        raw = benchmark(argv, args)
    except BenchmarkError as err:
        sys.exit(f'error: {err}')
    if args.json:
        Path(args.json).write_text(json.dumps(raw, indent=2) + '\n')


if __name__ == '__main__':
    main()
