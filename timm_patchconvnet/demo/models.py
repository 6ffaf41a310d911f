"""The models the demo serves: each `--model` string read by `model_ref`, built with its weights, and shown by name
(a folder's name, never its path) with its class names."""
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

from timm.data import ImageNetInfo, infer_imagenet_subset

from ..errors import one_line
from ..model_ref import ModelRef, ModelRefError, parse_model_ref
from ..patchconvnet import PatchConvNet
from ..pretrained import PretrainedWeightsUnavailableError, create_pretrained

__all__ = ['DemoError', 'DemoModel', 'MESSAGE_LIMIT', 'class_names', 'load_all', 'load_model', 'parse_demo_model']

MESSAGE_LIMIT = 400  # characters of a model's load error shown: state-dict and Hub errors run long


@dataclass
class DemoModel:
    name: str
    model: PatchConvNet
    labels: List[str]

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


def load_model(spec: str, name: Optional[str] = None) -> DemoModel:
    """Build the model named by `spec` (a training folder, `local-dir:`/`hf-hub:` id, or a timm name with optional
    tag); `name`: the name shown to users (default: the model's display name)."""
    ref = parse_demo_model(spec)
    try:
        model = create_pretrained(ref.timm_name)
    except PretrainedWeightsUnavailableError as err:
        raise DemoError(one_line(err, MESSAGE_LIMIT)) from err
    except Exception as err:  # any failure to build the model (safetensors, Hub, state dict...) stops the start-up
        raise DemoError(one_line(f'Cannot load model {spec!r}: {type(err).__name__}: {err}', MESSAGE_LIMIT)) from err
    if not isinstance(model, PatchConvNet) or model.attn_pool is None or model.num_classes == 0:
        raise DemoError(f'{spec!r} is not a PatchConvNet classifier with attention pooling: it has no map to show.')
    return DemoModel(name or ref.display_name, model.eval(), class_names(model))


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


def load_all(specs: Sequence[str]) -> Dict[str, DemoModel]:
    """The models by the name users see (`ModelRef.display_name`), made unique with a number when two folders share
    one. Every string is read before any model is built, so a mistyped one stops the start-up at once."""
    names = [parse_demo_model(spec).display_name for spec in specs]
    models: Dict[str, DemoModel] = {}
    for spec, base in zip(specs, names):
        name, copy = base, 1
        while name in models:
            copy += 1
            name = f'{base} ({copy})'
        models[name] = load_model(spec, name)
    return models
