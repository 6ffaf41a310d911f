"""PatchConvNet (Touvron et al. 2021) as a timm plugin: `import timm_patchconvnet` registers the models."""
from .attention import ImageExplanation, explain_image, get_attention_map, overlay_attention
from .patchconvnet import HUB_NAMESPACE, PatchConvNet, PretrainedWeightsUnavailableError, checkpoint_filter_fn

__version__ = '0.1.0'

__all__ = [
    'HUB_NAMESPACE',
    'ImageExplanation',
    'PatchConvNet',
    'PretrainedWeightsUnavailableError',
    'checkpoint_filter_fn',
    'explain_image',
    'get_attention_map',
    'overlay_attention',
]
