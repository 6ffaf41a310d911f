"""Pretrained weights: where this project's own tags load from, and what to do when weights cannot be had.

timm downloads weights when `pretrained=True`; without a network it would retry for about 48 s and end in a
traceback. `build_with_weights_help` checks first what can be known locally (no source at all, one of this
project's unpublished tags, a Hub host that does not resolve) and turns every failure into a
`PretrainedWeightsUnavailableError` that names what was tried and the three ways to supply weights offline.
"""
import os
import socket
import threading
from typing import Any, Callable, Dict, List, Optional, TypeVar
from urllib.parse import urlparse

import timm
import torch
from timm.models import resolve_pretrained_cfg

from .dataset_specs import DATASETS

__all__ = ['DEFAULT_HUB_NAMESPACE', 'HUB_NAMESPACE', 'PretrainedWeightsUnavailableError', 'UNPUBLISHED_TAGS',
           'build_with_weights_help', 'create_pretrained']

# The Hugging Face Hub organisation where this project publishes its own weights (a tag per data set, e.g. `cifar10`).
# A lab that publishes its own sets TIMM_PATCHCONVNET_HUB_NAMESPACE before the import; the tags then load from it.
DEFAULT_HUB_NAMESPACE = 'timm-patchconvnet'
HUB_NAMESPACE = os.environ.get('TIMM_PATCHCONVNET_HUB_NAMESPACE') or DEFAULT_HUB_NAMESPACE
# This project's own tags, not on the Hub yet: tag -> the preset that trains such a model
UNPUBLISHED_TAGS = {spec.name: spec.preset for spec in DATASETS.values() if spec.publishes_tag}

Model = TypeVar('Model')


def build_with_weights_help(variant: str, pretrained: bool, kwargs: Dict[str, Any], build: Callable[[], Model],
                            ) -> Model:
    """`build()` (timm's `build_model_with_cfg` for `variant` with `kwargs`), with pretrained weights that cannot be
    had reported as a PretrainedWeightsUnavailableError, before any download is tried where that can be known."""
    if not pretrained:
        return build()
    cfg = resolve_pretrained_cfg(variant, kwargs.get('pretrained_cfg'), kwargs.get('pretrained_cfg_overlay')).to_dict()
    name = f"{variant}.{cfg['tag']}" if cfg.get('tag') else variant
    if not any(cfg.get(key) for key in ('state_dict', 'file', 'hf_hub_id', 'url')):
        raise PretrainedWeightsUnavailableError(
            f'No pretrained weights are published for {name}.\n{_offline_help(name, cfg)}')
    if _unpublished(cfg, name) and not _in_hf_cache(cfg['hf_hub_id']):  # no network round trip to learn that
        raise PretrainedWeightsUnavailableError(
            f'{_unpublished_help(variant, cfg["tag"])}\n{_offline_help(name, cfg)}')
    unreachable = _hub_unreachable() if _from_hub_uncached(cfg) else None
    if unreachable:
        raise PretrainedWeightsUnavailableError(
            f'Could not load pretrained weights for {name}: {unreachable}\nTried: {_tried_sources(cfg)}.\n'
            f'{_offline_help(name, cfg)}')
    try:
        return build()
    except OSError as err:  # network, missing file or cache: URLError and huggingface_hub's errors are OSErrors
        raise PretrainedWeightsUnavailableError(
            f'Could not load pretrained weights for {name}: {type(err).__name__}: {err}\n'
            f'Tried: {_tried_sources(cfg)}.\n{_offline_help(name, cfg)}') from err


def create_pretrained(timm_name: str, **kwargs: Any) -> torch.nn.Module:
    """`timm.create_model(timm_name, pretrained=True, **kwargs)` for a model string's timm name. An `hf-hub:` model
    is read by timm (its config.json) before any of our code runs, so its Hub is checked here first: a host that
    does not resolve fails at once, not after huggingface_hub's retries."""
    if timm_name.startswith('hf-hub:'):
        repo_id = timm_name[len('hf-hub:'):].partition('@')[0]
        unreachable = None if _in_hf_cache(repo_id) else _hub_unreachable()
        if unreachable:
            raise PretrainedWeightsUnavailableError(
                f'Could not load {timm_name}: {unreachable} Set HF_HUB_OFFLINE=1 to use a copy in the Hugging Face '
                'cache, or pass a local folder (local-dir:FOLDER) or a weights file.')
    return timm.create_model(timm_name, pretrained=True, **kwargs)


class PretrainedWeightsUnavailableError(RuntimeError):
    """Pretrained weights were asked for but could not be had: says what was tried and how to supply them."""


def _offline_help(name: str, cfg: Dict[str, Any]) -> str:
    variant = name.split('.')[0]
    hub_id = cfg.get('hf_hub_id')
    if hub_id:
        from_cache = (f'a Hugging Face cache holding {hub_id} (models--{hub_id.replace("/", "--")}/refs/main and '
                      f'snapshots/<commit>/{{config.json,model.safetensors}}), then timm.create_model("{name}", '
                      'pretrained=True) with HF_HUB_OFFLINE=1')
    else:
        from_cache = ('a Hugging Face cache holding a repo with config.json and model.safetensors, then '
                      'timm.create_model("hf-hub:ORG/REPO", pretrained=True) with HF_HUB_OFFLINE=1')
    lines = [
        'Supply the weights in one of three ways that need no network:',
        f'  1. a weights file (official .pth or ours): timm.create_model("{variant}", pretrained=True, '
        'pretrained_cfg_overlay=dict(file="/path/to/weights"))  (add num_classes=N if its head is not 1000-way)',
        '  2. a folder written by timm.models.save_for_hf(model, DIR, safe_serialization=True): '
        'timm.create_model("local-dir:DIR", pretrained=True)',
        f'  3. {from_cache}.',
    ]
    if cfg.get('url'):
        lines.append(f'  (A copy of {cfg["url"].rsplit("/", 1)[-1]} in {torch.hub.get_dir()}/checkpoints is used too.)')
    return '\n'.join(lines)


def _unpublished_help(variant: str, tag: str) -> str:
    """What works today instead of a tag whose weights this project has not published yet."""
    lines = [f'The weights of {variant}.{tag} ({DATASETS[tag].short_title}) are not published yet: '
             f'{DEFAULT_HUB_NAMESPACE}/{variant}.{tag} does not exist on the Hugging Face Hub. What works today:']
    if f'{variant}.fb_in1k' in timm.list_pretrained(f'{variant}.*'):
        lines.append(f'  - fine-tune the official ImageNet-1k weights: timm.create_model("{variant}.fb_in1k", '
                     f'pretrained=True, num_classes={len(DATASETS[tag].label_names)})')
    preset = f'--preset {UNPUBLISHED_TAGS[tag]}' if variant == 'patchconvnet_s60_p4' else f'--dataset {tag}'
    lines.append(f'  - train your own: patchconvnet-train {preset} --model {variant} --data-dir DATA --output-dir RUN, '
                 'then patchconvnet-push-model RUN ORG/NAME, and load it with '
                 'timm.create_model("hf-hub:ORG/NAME", pretrained=True) (or timm.create_model("local-dir:RUN", '
                 'pretrained=True) without the Hub); a lab that publishes its own tags sets '
                 f'TIMM_PATCHCONVNET_HUB_NAMESPACE=ORG and pushes to ORG/{variant}.{tag}.')
    return '\n'.join(lines)


def _unpublished(cfg: Dict[str, Any], name: str) -> bool:
    """One of this project's own tags, to be read from its default Hub repo, which does not exist yet."""
    return (cfg.get('tag') in UNPUBLISHED_TAGS and cfg.get('hf_hub_id') == f'{DEFAULT_HUB_NAMESPACE}/{name}'
            and not cfg.get('file') and not cfg.get('state_dict'))


def _in_hf_cache(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache  # timm's own dependency
    return any(isinstance(try_to_load_from_cache(repo_id, filename), str)
               for filename in ('model.safetensors', 'pytorch_model.bin'))


def _hub_unreachable(timeout: float = 3.) -> Optional[str]:
    """Why the Hugging Face Hub cannot be reached, if its host name does not resolve: huggingface_hub would
    otherwise retry for about 48 s before failing. None when it resolves, when HF_HUB_OFFLINE is set (then
    huggingface_hub fails at once itself) or when the resolver does not answer within `timeout` (unknown: let
    huggingface_hub try). A lookup is local or cached: cheap when online."""
    from huggingface_hub import constants  # timm's own dependency
    if constants.HF_HUB_OFFLINE:
        return None
    host = urlparse(constants.ENDPOINT).hostname or constants.ENDPOINT
    failure: List[OSError] = []

    def resolve() -> None:
        try:
            socket.getaddrinfo(host, 443, type=socket.SOCK_STREAM)
        except OSError as err:
            failure.append(err)
    lookup = threading.Thread(target=resolve, daemon=True)  # getaddrinfo itself has no timeout
    lookup.start()
    lookup.join(timeout)
    return f'the Hub host {host} cannot be resolved ({failure[0]}): no network?' if failure else None


def _from_hub_uncached(cfg: Dict[str, Any]) -> bool:
    """timm would download these weights from the Hub: no state_dict or file given, a Hub id, not cached."""
    return (bool(cfg.get('hf_hub_id')) and not cfg.get('file') and not cfg.get('state_dict')
            and not _in_hf_cache(cfg['hf_hub_id']))


def _tried_sources(cfg: Dict[str, Any]) -> str:
    sources = [f'{key} {cfg[key]}' for key in ('state_dict', 'file', 'hf_hub_id', 'url') if cfg.get(key)]
    return '; '.join(sources) if sources else 'nothing (no weights are published for this configuration)'
