"""A pytest plugin that points timm's own `tests/test_models.py` at the models a plugin package registers.

test_models.py builds its parametrize lists at import time from `timm.list_models` / `timm.list_pretrained`, and
some of its tests ask for the models of given timm modules. Loaded with `-p plugin` (before test_models.py is
imported), this module imports the plugin package, so that its `@register_model` functions run, and narrows those
two listings to the plugin's models; a listing by module lists the plugin's modules instead of timm's.

Settings (environment): TIMM_SUITE_PLUGIN (the package to import, default timm_patchconvnet) and
TIMM_SUITE_MODELS (comma-separated fnmatch patterns of model names, default patchconvnet_*).
"""
import fnmatch
import importlib
import os

import timm

PACKAGE = os.environ.get('TIMM_SUITE_PLUGIN', 'timm_patchconvnet')
PATTERNS = os.environ.get('TIMM_SUITE_MODELS', 'patchconvnet_*').split(',')

_timm_list_models = timm.list_models
_timm_list_pretrained = timm.list_pretrained
_registered_before = set(_timm_list_models())
importlib.import_module(PACKAGE)
PLUGIN_MODELS = sorted(set(_timm_list_models()) - _registered_before)


def _selected(name: str) -> bool:
    architecture = name.split('.', 1)[0]
    return architecture in PLUGIN_MODELS and any(fnmatch.fnmatch(architecture, p) for p in PATTERNS)


def _plugin_module_names() -> list:
    # timm files a model under the last part of its entry point's module name (timm_patchconvnet.patchconvnet ->
    # patchconvnet); model_entrypoint is public, the registry's own mapping is not
    return sorted({timm.models.model_entrypoint(n).__module__.rsplit('.', 1)[-1] for n in PLUGIN_MODELS})


def list_models(filter='', module='', pretrained=False, exclude_filters='', name_matches_cfg=False,
                include_tags=None):
    names = _timm_list_models(filter=filter, module=_plugin_module_names() if module else '', pretrained=pretrained,
                              exclude_filters=exclude_filters, name_matches_cfg=name_matches_cfg,
                              include_tags=include_tags)
    return [n for n in names if _selected(n)]


def list_pretrained(filter='', exclude_filters=''):
    return [n for n in _timm_list_pretrained(filter=filter, exclude_filters=exclude_filters) if _selected(n)]


timm.list_models = list_models
timm.list_pretrained = list_pretrained


def pytest_configure(config):
    # the marks test_models.py uses (timm registers them in its own setup.cfg, which is not copied)
    for mark in ('base', 'cfg', 'cfg_nonstd', 'forward', 'backward', 'torchscript', 'features', 'fxforward',
                 'fxbackward', 'timeout(seconds): pytest-timeout'):
        config.addinivalue_line('markers', mark)
