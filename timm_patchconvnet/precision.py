"""Numeric precision for inference and training: what the hardware runs natively, `precision='auto'`, and
`optimize_for_inference`.

One place decides. A CPU runs bfloat16 natively with AVX512-BF16 or AMX-BF16; without them torch would emulate it,
slower than float32, so `auto` keeps float32 there. int8 needs VNNI (AVX512-VNNI, AVX-VNNI or AMX-INT8: not AVX2
alone, see `CPU_FLAGS`) and a calibration set, so `auto` never picks it: ask for it with calibration images. On CUDA,
bfloat16 from compute capability 8.0 (Ampere), float16 from 7.0.

`optimize_for_inference(model, precision)` returns an `InferenceModel` that `get_attention_map`,
`attention_and_logits` and `explain_image` take in place of the model:

- fp32, bf16, fp16: the model fused (`timm.utils.reparameterize_model`: norm affine and layer scale folded into the
  convs) and its weights cast once, not per call as under autocast. LayerNorm and softmax keep float32 statistics
  (torch accumulates reduced-precision inputs in float32 on CPU and CUDA); maps and logits come back in float32.
- int8: the fused model exported to ONNX (`export_onnx`), its convolutions and matrix products quantized statically
  (per-channel int8 weights, uint8 activations) by ONNX Runtime's `quantize_static` on the calibration images, and
  run by ONNX Runtime (the `onnx` extra). `check_images` compares it with float32 first (`agreement`).
"""
import copy
import importlib.util
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, FrozenSet, Iterable, NamedTuple, Optional, Tuple

import torch
from timm.data import resolve_model_data_config
from torch import nn

from .errors import install_hint, one_line
from .patchconvnet import PatchConvNet

__all__ = ['Agreement', 'Hardware', 'InferenceModel', 'PRECISIONS', 'PrecisionError', 'agreement', 'describe_choice',
           'detect_hardware', 'optimize_for_inference', 'require_agreement', 'resolve_precision',
           'training_mixed_precision', 'unsupported_reason']

PRECISIONS = ('auto', 'fp32', 'bf16', 'fp16', 'int8')
DTYPES = {'fp32': torch.float32, 'bf16': torch.bfloat16, 'fp16': torch.float16}
# CPU flags (/proc/cpuinfo) of native support: any one of them suffices. int8: VNNI's 8-bit dot products. ONNX
# Runtime runs int8 on AVX2 alone too (vpmaddubsw), but its 16-bit sums saturate with 8-bit weights, and the 7-bit
# weights it advises there (`reduce_range`, its `quantize_static` docstring, 1.32) still changed 3 of the 359 digits
# test predictions on emulated AVX2 kernels (the bound allows 1): benchmarks/README.md, benchmarks/int8_emulated.py
CPU_FLAGS = {'bf16': ('amx_bf16', 'avx512_bf16'), 'fp16': ('amx_fp16', 'avx512_fp16'),
             'int8': ('amx_int8', 'avx512_vnni', 'avx_vnni')}
CUDA_CAPABILITY = {'bf16': (8, 0), 'fp16': (7, 0)}  # bf16 tensor cores from Ampere, fp16 from Volta
# int8 is offered only where it keeps the answers (issue 24): top-1 agreement and the maps' Pearson correlation
MIN_TOP1_AGREEMENT = 0.995
MIN_MEDIAN_PEARSON = 0.99
MIN_P5_PEARSON = 0.95
# What runs each precision; openvino runs on the CPU only. OpenVINO running the same int8 graph as ONNX Runtime
# changed 3.6% of the digits test predictions (tests/test_precision.py's bound: 0.5%), so it is not offered for int8.
BACKENDS = {'fp32': ('torch', 'openvino'), 'bf16': ('torch', 'openvino'), 'fp16': ('torch',), 'int8': ('onnxruntime',)}
# The default: the first, but bf16 on the CPU runs in OpenVINO where it is installed, 2.3x torch's bf16 on S60 at 224
# (benchmarks/README.md)
DEFAULT_BACKENDS = {precision: backends[0] for precision, backends in BACKENDS.items()}
FASTER_ON_CPU = {'bf16': 'openvino'}
OPENVINO_PRECISIONS = {'fp32': 'f32', 'bf16': 'bf16'}  # its INFERENCE_PRECISION_HINT


class PrecisionError(ValueError):
    """A precision the hardware cannot run, or that does not keep the model's answers: one line."""


@dataclass(frozen=True)
class Hardware:
    """What `resolve_precision` needs to know of a device: CPU flags, or a CUDA compute capability."""
    device_type: str  # 'cpu' or 'cuda'
    cpu_flags: FrozenSet[str] = frozenset()
    cuda_capability: Optional[Tuple[int, int]] = None
    name: str = ''

    def describe(self) -> str:
        if self.device_type == 'cuda':
            return f'{self.name or "CUDA"} (compute capability {self.cuda_capability[0]}.{self.cuda_capability[1]})'
        known = sorted(flag for flags in CPU_FLAGS.values() for flag in flags if flag in self.cpu_flags)
        return f'{self.name or "CPU"} ({", ".join(known) if known else "no bf16, fp16 or VNNI flags"})'


def _cpu_flags_and_name() -> Tuple[FrozenSet[str], str]:
    """The flags and model name of /proc/cpuinfo (Linux); elsewhere none, so only float32 is offered."""
    flags, name = frozenset(), ''
    try:
        text = Path('/proc/cpuinfo').read_text()
    except OSError:
        return flags, torch.backends.cpu.get_cpu_capability()
    for line in text.splitlines():
        key, _, value = line.partition(':')
        if key.strip() == 'flags' and not flags:
            flags = frozenset(value.split())
        elif key.strip() == 'model name' and not name:
            name = value.strip()
    return flags, name


def detect_hardware(device: torch.device | str = 'cpu') -> Hardware:
    """The hardware behind `device` (a torch device or its name)."""
    device = torch.device(device)
    if device.type == 'cuda':
        index = device.index if device.index is not None else torch.cuda.current_device()
        return Hardware('cuda', cuda_capability=torch.cuda.get_device_capability(index),
                        name=torch.cuda.get_device_name(index))
    if device.type != 'cpu':
        raise PrecisionError(f'device {device}: precision is decided for cpu and cuda only')
    flags, name = _cpu_flags_and_name()
    return Hardware('cpu', flags, name=name)


def unsupported_reason(precision: str, hardware: Hardware) -> Optional[str]:
    """Why `hardware` cannot run `precision` natively (fp32, bf16, fp16, int8), or None when it can."""
    if precision == 'fp32':
        return None
    if hardware.device_type == 'cuda':
        if precision == 'int8':
            return 'int8 runs on the CPU (ONNX Runtime) only'
        if hardware.cuda_capability < CUDA_CAPABILITY[precision]:
            major, minor = CUDA_CAPABILITY[precision]
            return f'{precision} needs compute capability {major}.{minor} or later'
        return None
    if not any(flag in hardware.cpu_flags for flag in CPU_FLAGS[precision]):
        why = "int8 changes the answers on these CPUs' kernels" if precision == 'int8' else 'else it is emulated, slower'
        return f'{precision} needs one of the CPU flags {", ".join(CPU_FLAGS[precision])} ({why})'
    return None


def resolve_precision(precision: str, hardware: Hardware) -> str:
    """`precision` as one of fp32, bf16, fp16, int8 for `hardware` (a pure function: tests pass any flags).

    'auto' is the fastest float precision the hardware runs natively: bf16 where it has it, fp16 on CUDA before
    Ampere, else fp32; never int8, which needs calibration images. Any other precision is returned as it is, or
    refused with a PrecisionError when the hardware does not run it natively.
    """
    if precision not in PRECISIONS:
        raise PrecisionError(f'precision={precision!r}: choose one of {", ".join(PRECISIONS)}')
    if precision == 'auto':
        return next(p for p in ('bf16', 'fp16', 'fp32') if unsupported_reason(p, hardware) is None
                    and (p != 'fp16' or hardware.device_type == 'cuda'))
    reason = unsupported_reason(precision, hardware)
    if reason:
        raise PrecisionError(f'precision={precision!r} cannot run on {hardware.describe()}: {reason}')
    return precision


def training_mixed_precision(mixed_precision: str, hardware: Hardware) -> str:
    """Accelerate's `mixed_precision` ('no', 'fp16', 'bf16') for a training option that may be 'auto': bf16 where
    the hardware has it natively (Accelerate autocasts to bf16 on the CPU as on CUDA), fp16 on CUDA before Ampere,
    else 'no'. An explicit bf16 or fp16 the hardware cannot run natively is refused."""
    if mixed_precision == 'no':
        return 'no'
    resolved = resolve_precision(mixed_precision, hardware)
    if resolved not in ('bf16', 'fp16'):  # int8 is for inference only
        return 'no' if mixed_precision == 'auto' else resolved
    return resolved


# ---------------------------------------------------------------------------------------------------------------
# Inference


class _TorchRunner(nn.Module):
    """The fused model with its trunk's weights cast once to `dtype`; the attention pooling, norm and head (a few
    per cent of the work) stay float32, so near-tie logits are not rounded to bf16's 8 bits."""

    def __init__(self, fused: PatchConvNet, dtype: torch.dtype):
        super().__init__()
        self.model = fused.to(memory_format=torch.channels_last)
        for trunk in (self.model.stem, self.model.blocks):
            trunk.to(dtype)
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        device = next(self.model.stem.parameters()).device  # the input may come from the source model's device
        x = x.to(device, self.dtype).contiguous(memory_format=torch.channels_last)
        features = self.model.forward_features(x).float()
        maps = self.model.forward_attention(features).mean(1)  # (B, num_class_tokens, h, w)
        logits = self.model.forward_head(features) if self.model.num_classes > 0 else None
        return maps, logits


class _OnnxRunner:
    """An ONNX Runtime session of `export_onnx`'s graph: (B, num_class_tokens, h, w) maps and the logits."""

    def __init__(self, path: Path, single_token: bool):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()  # as many as torch would use
        self.session = onnxruntime.InferenceSession(str(path), options, providers=['CPUExecutionProvider'])
        self.single_token = single_token

    def __call__(self, x: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        logits, maps = self.session.run(None, {'input': x.detach().float().cpu().contiguous().numpy()})
        maps = torch.from_numpy(maps)
        return maps.unsqueeze(1) if self.single_token else maps, torch.from_numpy(logits)


def _openvino_model(model: PatchConvNet):
    """The fused model's logits and maps (`export.py`'s graph) converted by OpenVINO from torch."""
    import openvino

    from .export import _OutputsAndAttention

    fused = _fused_copy(model, torch.device('cpu'))  # traced: public ops only (`fusion._onednn_fusable`)
    example = torch.randn(2, *resolve_model_data_config(model)['input_size'])
    with warnings.catch_warnings():  # it traces with torch.jit, whose deprecation notes are not the user's
        warnings.simplefilter('ignore')
        return openvino.convert_model(_OutputsAndAttention(fused), example_input=example)


class _OpenVinoRunner:
    """OpenVINO's CPU plugin running the fused model (`export.py`'s logits-and-maps graph) with `inference_precision`
    (bf16: its own fused kernels, AVX512-BF16 or AMX; f32), threads as torch's."""

    def __init__(self, model: PatchConvNet, inference_precision: str):
        import openvino

        compiled = openvino.Core().compile_model(_openvino_model(model), 'CPU', {
            'INFERENCE_PRECISION_HINT': inference_precision, 'INFERENCE_NUM_THREADS': torch.get_num_threads()})
        self.request = compiled.create_infer_request()
        self.single_token = model.class_tokens == 'single'

    def __call__(self, x: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        outputs = self.request.infer({0: x.detach().float().cpu().contiguous().numpy()})
        logits, maps = (torch.from_numpy(outputs[i].copy()) for i in range(2))
        return maps.unsqueeze(1) if self.single_token else maps, logits


class InferenceModel(nn.Module):
    """A PatchConvNet prepared for inference at one precision (`optimize_for_inference`). It takes float32 batches
    as the model does and gives float32 logits; `get_attention_map`, `attention_and_logits` and `explain_image` take
    it in place of the model. `source` is the model it was made from (its data config, class names, Grad-CAM)."""

    def __init__(self, source: PatchConvNet, precision: str, backend: str,
                 runner: Callable[[torch.Tensor], Tuple[torch.Tensor, Optional[torch.Tensor]]]):
        super().__init__()
        self.source = source
        self.runner = runner
        self.precision = precision
        self.backend = backend

    @property
    def pretrained_cfg(self) -> dict:  # timm's resolve_data_config reads it
        return self.source.pretrained_cfg

    @property
    def in_chans(self) -> int:
        return self.source.in_chans

    @property
    def num_classes(self) -> int:
        return self.source.num_classes

    @property
    def class_tokens(self) -> str:
        return self.source.class_tokens

    def describe(self) -> str:
        return f'{self.precision} ({self.backend})'

    @torch.no_grad()
    def attention_and_logits(self, x: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """The pooling's maps (B, num_class_tokens, h, w), mean over heads, and the logits, both float32."""
        return self.runner(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attention_and_logits(x)[1]


def optimize_for_inference(
        model: PatchConvNet,
        precision: str = 'auto',
        *,
        backend: Optional[str] = None,
        calibration: Optional[Iterable[torch.Tensor]] = None,
        check_images: Optional[torch.Tensor] = None,
        device: Optional[torch.device | str] = None,
) -> InferenceModel:
    """`model` (left as it is) prepared for inference at `precision` on `device` (default: the model's).

    Args:
        model: A PatchConvNet with attention pooling.
        precision: 'auto' (see `resolve_precision`), 'fp32', 'bf16', 'fp16' or 'int8'.
        backend: What runs it: 'torch' (fp32, bf16, fp16), 'onnxruntime' (int8) or 'openvino' (fp32, bf16 on the
            CPU; the `openvino` extra). Default: torch, onnxruntime for int8, and openvino for bf16 on the CPU
            where it is installed (the fastest measured; converting the model takes seconds to a minute).
        calibration: int8 only, required: preprocessed batches (B, C, H, W), a few hundred training images in all.
        check_images: Preprocessed held-out images (N, C, H, W): the result must agree with float32 on them
            (top-1 >= 99.5%, attention-map Pearson median >= 0.99, 5th percentile >= 0.95) or PrecisionError.

    Raises PrecisionError for a precision the hardware does not run natively or a backend that does not run it
    (one line), and ImportError naming the extra of a backend that is not installed.
    """
    if not isinstance(model, PatchConvNet) or model.attn_pool is None:
        raise PrecisionError('optimize_for_inference needs a PatchConvNet with attention pooling (global_pool="token")')
    device = torch.device(device) if device is not None else next(model.parameters()).device
    resolved = resolve_precision(precision, detect_hardware(device))
    backend = backend or _default_backend(resolved, device)
    if backend not in BACKENDS[resolved] or (backend != 'torch' and device.type != 'cpu'):
        raise PrecisionError(f'backend={backend!r} does not run {resolved} on {device.type}: choose '
                             f'{" or ".join(BACKENDS[resolved])}' + (' (CPU only)' if backend != 'torch' else ''))
    if resolved == 'int8':
        if calibration is None:
            raise PrecisionError("precision='int8' needs calibration images: pass calibration=[batches, ...]")
        runner = _int8_runner(model, calibration)
    elif backend == 'openvino':
        runner = _OpenVinoRunner(_require_openvino(model), OPENVINO_PRECISIONS[resolved])
    else:
        runner = _TorchRunner(_fused_copy(model, device), DTYPES[resolved])
    optimized = InferenceModel(model, resolved, backend, runner)
    if check_images is not None:
        require_agreement(model, optimized, check_images)
    return optimized


def _default_backend(precision: str, device: torch.device) -> str:
    faster = FASTER_ON_CPU.get(precision)
    if device.type == 'cpu' and faster and importlib.util.find_spec(faster) is not None:
        return faster
    return DEFAULT_BACKENDS[precision]


def _require_openvino(model: PatchConvNet) -> PatchConvNet:
    if importlib.util.find_spec('openvino') is None:
        raise ImportError(f"backend='openvino' needs the openvino package: {install_hint('openvino')}")
    return model


def _fused_copy(model: PatchConvNet, device: torch.device) -> nn.Module:
    from timm.utils import reparameterize_model

    return reparameterize_model(copy.deepcopy(model).eval().to(device))


def _int8_runner(model: PatchConvNet, calibration: Iterable[torch.Tensor]) -> _OnnxRunner:
    """`_quantize_int8`'s graph with 8-bit weights run by ONNX Runtime (each quantized conv one int8 kernel: VNNI's)."""
    with tempfile.TemporaryDirectory(prefix='patchconvnet-int8-') as folder:
        quantized = Path(folder) / 'int8.onnx'
        _quantize_int8(model, calibration, quantized, reduce_range=False)
        return _OnnxRunner(quantized, model.class_tokens == 'single')  # the session holds the graph


def _quantize_int8(model: PatchConvNet, calibration: Iterable[torch.Tensor], path: Path, reduce_range: bool) -> None:
    """The fused model exported to ONNX at `path`, its convolutions quantized on the calibration batches (QDQ
    format: per-channel int8 weights, uint8 activations). `reduce_range` (7-bit weights, ONNX Runtime's advice for a
    CPU without VNNI) is for benchmarks/int8_emulated.py, which measured it falling short (`CPU_FLAGS`)."""
    try:
        from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError as err:
        raise ImportError(f"precision='int8' needs onnxruntime ({err}): {install_hint('onnx')}") from err
    from .export import export_onnx

    class Batches(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(calibration)

        def get_next(self) -> Optional[dict]:
            batch = next(self.batches, None)
            return None if batch is None else {'input': batch.detach().float().cpu().contiguous().numpy()}

    with tempfile.TemporaryDirectory(prefix='patchconvnet-int8-') as folder:
        exported, prepared = (os.path.join(folder, name) for name in ('model', 'prepared'))
        export_onnx(_fused_copy(model, torch.device('cpu')), exported, attention=True)
        quant_pre_process(exported, prepared)
        quantize_static(prepared, str(path), Batches(), quant_format=QuantFormat.QDQ, op_types_to_quantize=['Conv'],
                        per_channel=True, reduce_range=reduce_range, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8)


class Agreement(NamedTuple):
    """How far an optimized model keeps the float32 model's answers on a set of images."""
    top1: float  # share of images with the same predicted class
    pearson_median: float  # Pearson correlation of each image's attention map (token grid) with float32's
    pearson_p5: float  # its 5th percentile

    def holds(self) -> bool:
        return (self.top1 >= MIN_TOP1_AGREEMENT and self.pearson_median >= MIN_MEDIAN_PEARSON
                and self.pearson_p5 >= MIN_P5_PEARSON)


@torch.no_grad()
def agreement(reference: PatchConvNet, optimized: InferenceModel, images: torch.Tensor,
              batch_size: int = 64) -> Agreement:
    """`optimized` against `reference` (float32) on preprocessed `images` (N, C, H, W): the predicted classes, and
    the maps of the class token (with per-class tokens, of the class float32 predicts)."""
    from .attention import pooling_maps_and_logits

    same, correlations = [], []
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size]
        maps, logits = pooling_maps_and_logits(reference, batch)
        fast_maps, fast_logits = pooling_maps_and_logits(optimized, batch)
        same.append(logits.argmax(-1) == fast_logits.argmax(-1))
        token = logits.argmax(-1) if reference.class_tokens == 'per_class' else torch.zeros_like(logits[:, 0]).long()
        rows = torch.arange(len(batch))
        a, b = maps[rows, token].flatten(1).float(), fast_maps[rows, token].flatten(1).float()
        a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
        correlations.append((a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-12))
    pearson = torch.cat(correlations)
    return Agreement(torch.cat(same).float().mean().item(), pearson.median().item(),
                     torch.quantile(pearson, 0.05).item())


def require_agreement(reference: PatchConvNet, optimized: InferenceModel, images: torch.Tensor) -> Agreement:
    """`agreement`, or PrecisionError when it falls short of the bounds."""
    result = agreement(reference, optimized, images)
    if not result.holds():
        raise PrecisionError(one_line(
            f'precision={optimized.precision!r} does not keep this model\'s answers on the {len(images)} check '
            f'images: top-1 agreement {result.top1:.4f} (needs {MIN_TOP1_AGREEMENT}), map Pearson median '
            f'{result.pearson_median:.4f} (needs {MIN_MEDIAN_PEARSON}), 5th percentile {result.pearson_p5:.4f} '
            f'(needs {MIN_P5_PEARSON}); use fp32'))
    return result


def describe_choice(precision: str, optimized: InferenceModel, hardware: Hardware) -> str:
    """One line saying what was asked, what runs and on what: for the demo and the command line."""
    asked = f' (asked: {precision})' if precision != optimized.precision else ''
    return f'precision {optimized.describe()}{asked} on {hardware.describe()}'

