"""PatchConvNet (Touvron et al. 2021) as a timm plugin: `import timm_patchconvnet` registers the models."""
from .attention import ImageExplanation, explain_image, get_attention_map, overlay_attention
from .export import export_onnx
from .gradcam import gradcam_map
from .patchconvnet import PatchConvNet, checkpoint_filter_fn
from .precision import InferenceModel, PrecisionError, optimize_for_inference, resolve_precision
from .pretrained import HUB_NAMESPACE, UNPUBLISHED_TAGS, PretrainedWeightsUnavailableError

__version__ = '0.4.0'

__all__ = [
    'HUB_NAMESPACE',
    'ImageExplanation',
    'InferenceModel',
    'PatchConvNet',
    'PrecisionError',
    'PretrainedWeightsUnavailableError',
    'UNPUBLISHED_TAGS',
    'checkpoint_filter_fn',
    'explain_image',
    'export_onnx',
    'gradcam_map',
    'get_attention_map',
    'optimize_for_inference',
    'overlay_attention',
    'resolve_precision',
]
