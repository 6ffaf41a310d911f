"""The models the demo serves: each `--model` string read by `model_ref`, built with its weights, and shown by name
(a folder's name, never its path) with its class names."""
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

from timm.data import ImageNetInfo, infer_imagenet_subset

from ..errors import one_line
from ..model_ref import ModelRef, ModelRefError, parse_model_ref
from ..patchconvnet import PatchConvNet
from ..precision import InferenceModel, PrecisionError, optimize_for_inference
from ..pretrained import PretrainedWeightsUnavailableError, create_pretrained

__all__ = ['DemoError', 'DemoModel', 'MESSAGE_LIMIT', 'class_names', 'load_all', 'load_model', 'parse_demo_model']

MESSAGE_LIMIT = 400  # characters of a model's load error shown: state-dict and Hub errors run long


@dataclass
class DemoModel:
    name: str
    model: PatchConvNet  # float32: Grad-CAM's gradients
    labels: List[str]
    inference: Optional[InferenceModel] = None  # the attention maps' model at the precision chosen (`--precision`)

    @property
    def runner(self) -> PatchConvNet:
        """What the attention maps run: the optimized model, else the model itself."""
        return self.inference if self.inference is not None else self.model

    @property
    def precision(self) -> str:
        """The precision the maps run at, in words (shown in every answer)."""
        return self.inference.describe() if self.inference is not None else 'fp32 (torch)'

    @property
    def per_class(self) -> bool:
        return self.model.class_tokens == 'per_class'


class DemoError(ValueError):
    """A model that cannot be served: the message says which and why."""


def parse_demo_model(spec: str) -> ModelRef:
    """`--model`'s string read as every command reads it; one that names nothing is a DemoError."""
    try:
        return parse_model_ref(spec)
    except ModelRefError as err:
        raise DemoError(f'--model {err}') from err


def load_model(spec: str, name: Optional[str] = None, precision: Optional[str] = 'fp32') -> DemoModel:
    """Build the model named by `spec` (a training folder, `local-dir:`/`hf-hub:` id, or a timm name with optional
    tag); `name`: the name shown to users (default: the model's display name); `precision`: of its attention maps
    (`precision.resolve_precision`; int8, which needs calibration images, is not offered; None: the float32 model
    alone, for a caller that prepares its own)."""
    ref = parse_demo_model(spec)
    try:
        model = create_pretrained(ref.timm_name)
    except PretrainedWeightsUnavailableError as err:
        raise DemoError(one_line(err, MESSAGE_LIMIT)) from err
    except Exception as err:  # any failure to build the model (safetensors, Hub, state dict...) stops the start-up
        raise DemoError(one_line(f'Cannot load model {spec!r}: {type(err).__name__}: {err}', MESSAGE_LIMIT)) from err
    if not isinstance(model, PatchConvNet) or model.attn_pool is None or model.num_classes == 0:
        raise DemoError(f'{spec!r} is not a PatchConvNet classifier with attention pooling: it has no map to show.')
    model = model.eval()
    if precision == 'int8':
        raise DemoError("--precision int8 needs calibration images, which the demo does not have: use auto or bf16")
    if precision is None:
        return DemoModel(name or ref.display_name, model, class_names(model))
    try:
        inference = optimize_for_inference(model, precision)
    except PrecisionError as err:
        raise DemoError(f'--precision: {err}') from err
    return DemoModel(name or ref.display_name, model, class_names(model), inference)


def class_names(model: PatchConvNet) -> List[str]:
    """Label names saved with the weights (train.py writes them), ImageNet's from timm, else the class indices."""
    names = model.pretrained_cfg.get('label_names')
    if names and len(names) == model.num_classes:
        return [str(n) for n in names]
    subset = infer_imagenet_subset(model)
    if subset:
        info = ImageNetInfo(subset)
        return [info.index_to_description(i) for i in range(model.num_classes)]
    return [f'class {i}' for i in range(model.num_classes)]


def load_all(specs: Sequence[str], precision: str = 'fp32') -> Dict[str, DemoModel]:
    """The models by the name users see (`ModelRef.display_name`), made unique with a number when two folders share
    one. Every string is read before any model is built, so a mistyped one stops the start-up at once."""
    names = [parse_demo_model(spec).display_name for spec in specs]
    models: Dict[str, DemoModel] = {}
    for spec, base in zip(specs, names):
        name, copy = base, 1
        while name in models:
            copy += 1
            name = f'{base} ({copy})'
        models[name] = load_model(spec, name, precision)
    return models

