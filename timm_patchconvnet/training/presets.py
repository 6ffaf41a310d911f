"""The seed paper's runs (Tables I-IV and the fine-tuning run), one preset each: `train.py --preset NAME`.

The seed paper: A. Betello and L. Carmignani, "Augmenting Convolutional Networks with Attention-based Aggregation
for Image Classification and Breast Cancer Detection" (student paper applying PatchConvNet S60 to CIFAR-10 and IDC).
Each preset sets TrainConfig fields; flags given on the command line override them. `paper` is the seed paper's
test accuracy for that run where it reports one, for comparison, not a result of ours. Its Lamb is
torch-optimizer's (`--opt lamb_torch_optimizer`), which is what the presets use; timm's `lamb` is deit's algorithm.
"""
from typing import Any, Dict

from ..config import TORCH_OPTIMIZER_LAMB, check_settings

__all__ = ['PRESETS', 'preset_settings']

LAMB = TORCH_OPTIMIZER_LAMB
_CIFAR = dict(dataset='cifar10', patience=10)
_IDC = dict(dataset='idc', model='patchconvnet_s60_p4', epochs=15, batch_size=64, patience=10)


def _table4() -> Dict[str, Dict[str, Any]]:
    grid = {}
    for opt in ('sgd', LAMB, 'adam'):
        for lr in (0.01, 0.0075, 0.003):
            for wd in (0., 0.01):
                paper = '85.42%' if (opt, lr, wd) == ('sgd', 0.01, 0.) else None
                name = 'lamb' if opt == LAMB else opt
                grid[f'table4-{name}-lr{lr:g}-wd{wd:g}'] = dict(_IDC, opt=opt, lr=lr, weight_decay=wd, paper=paper)
    return grid


PRESETS: Dict[str, Dict[str, Any]] = {
    # Table I: CIFAR-10, 16x16 patches (2x2 = 4 tokens on 32x32), batch 2048, 50 epochs
    'table1-lamb-lr0.01': dict(_CIFAR, model='patchconvnet_s60_p16', epochs=50, batch_size=2048, opt=LAMB, lr=0.01,
                               paper='78.2%'),
    'table1-lamb-lr0.003': dict(_CIFAR, model='patchconvnet_s60_p16', epochs=50, batch_size=2048, opt=LAMB,
                                lr=0.003, paper=None),
    'table1-sgd-lr0.01': dict(_CIFAR, model='patchconvnet_s60_p16', epochs=50, batch_size=2048, opt='sgd', lr=0.01,
                              paper='51.10% (SGD, lr not stated)'),
    'table1-sgd-lr0.003': dict(_CIFAR, model='patchconvnet_s60_p16', epochs=50, batch_size=2048, opt='sgd',
                               lr=0.003, paper=None),
    # Table II: CIFAR-10, 4x4 patches (64 tokens), batch 64, 10 epochs
    'table2-lamb': dict(_CIFAR, model='patchconvnet_s60_p4', epochs=10, batch_size=64, opt=LAMB, lr=3e-3,
                        weight_decay=0.01, paper='81.54%'),
    'table2-sgd': dict(_CIFAR, model='patchconvnet_s60_p4', epochs=10, batch_size=64, opt='sgd', lr=3e-3,
                       weight_decay=0.01, paper='68.76%'),
    'table2-resnet50': dict(_CIFAR, model='resnet50', epochs=10, batch_size=64, opt=LAMB, lr=3e-3,
                            weight_decay=0.01, paper='75.32%'),
    # Table III: IDC, 15 epochs, batch 64 (the seed split patches at random; ours splits by patient)
    'table3-resnet50-lamb': dict(_IDC, model='resnet50', opt=LAMB, lr=3e-3, weight_decay=0.01, paper='85.39%'),
    'table3-s60-lamb': dict(_IDC, opt=LAMB, lr=3e-3, weight_decay=0.01, paper='84.94%'),
    'table3-s60-sgd': dict(_IDC, opt='sgd', lr=3e-3, weight_decay=0.01, paper='78.02%'),
    **_table4(),
    # the fine-tuned S60: ImageNet-1k weights in the /4 stem, a new 2-class head
    'idc-finetune': dict(_IDC, pretrained='fb_in1k', num_classes=2, opt=LAMB, lr=1e-3, weight_decay=0.01,
                         paper='87.95%'),
}


def preset_settings(name: str) -> Dict[str, Any]:
    """The TrainConfig values of the preset `name`."""
    return {key: value for key, value in PRESETS[name].items() if key != 'paper'}


_PROBLEMS = {name: check_settings(preset_settings(name)) for name in PRESETS}
if any(_PROBLEMS.values()):  # a preset that the command line would refuse fails here, at import
    raise ValueError(f'Invalid presets: { {name: p for name, p in _PROBLEMS.items() if p} }')
