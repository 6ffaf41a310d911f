"""Training: the loop (`loop.py`, Accelerate), the model it trains (`model.py`), its loaders (`loaders.py`), the
outputs of a run (`outputs.py`), its output folder (`output_dir.py`) and resumable state (`run_files.py`), metrics,
presets and the attention grid of a finished run. The options themselves are `timm_patchconvnet.config.TrainConfig`.

The loop's names are imported on first use, so that `presets` (which the command line's --help reads) does not
pull in Accelerate, `datasets` and scikit-learn.
"""
from typing import Any

__all__ = ['TORCH_OPTIMIZER_LAMB', 'TrainConfig', 'TrainingError', 'create_training_model', 'evaluate_checkpoint',
           'evaluate_pretrained', 'train']

_CONFIG_NAMES = ('TORCH_OPTIMIZER_LAMB', 'TrainConfig')


def __getattr__(name: str) -> Any:
    if name in _CONFIG_NAMES:
        from .. import config
        return getattr(config, name)
    if name in __all__:
        from . import loop
        return getattr(loop, name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
