"""Settings shared by training, the command lines and the Hub tools, with no import beyond the standard library.

`TrainConfig` is what `patchconvnet-train` (`train.py`) takes and what metrics.json records; the Hub export reads
it to write a run's command line into the model card without importing the training stack (Accelerate,
`datasets`, scikit-learn), so publishing a finished run needs only the `hub` extra.
"""
from dataclasses import dataclass
from typing import Optional

__all__ = ['CIFAR10_HUB_ID', 'TORCH_OPTIMIZER_LAMB', 'TrainConfig']

CIFAR10_HUB_ID = 'uoft-cs/cifar10'
TORCH_OPTIMIZER_LAMB = 'lamb_torch_optimizer'  # --opt value for torch-optimizer's Lamb, the seed paper's


@dataclass
class TrainConfig:
    dataset: str = 'digits'
    data_dir: Optional[str] = None
    hub_id: Optional[str] = None
    model: str = 'patchconvnet_ti12_p4'
    pretrained: Optional[str] = None
    num_classes: Optional[int] = None
    img_size: Optional[int] = None
    epochs: int = 10
    batch_size: int = 64
    grad_accum_steps: int = 1
    opt: str = 'lamb'
    lr: float = 3e-3
    weight_decay: float = 0.01
    momentum: float = 0.9
    sched: str = 'cosine'
    warmup_epochs: float = 0.
    label_smoothing: float = 0.
    drop_path: float = 0.
    patience: int = 10
    seed: int = 0
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    max_steps_per_epoch: Optional[int] = None
    num_workers: int = 0
    mixed_precision: str = 'no'
    report_to: Optional[str] = None
    output_dir: str = 'runs/digits'
    resume: bool = False
    overwrite: bool = False
