"""Print the variants table of the README: parameters and GMACs, measured on the meta device (no weights made).

    python benchmarks/model_table.py

MACs are counted by torch.utils.flop_counter (convolutions, linears and matmuls; FLOPs / 2), the same convention
as the paper's "GFLOPs"; element-wise work (norms, activations, softmax) is not counted.
"""
import timm
import torch
from torch.utils.flop_counter import FlopCounterMode

import timm_patchconvnet  # noqa: F401  (registers the models)


def measure(name: str) -> tuple:
    model = timm.create_model(name, device='meta').eval()
    cfg = model.pretrained_cfg
    params = sum(p.numel() for p in model.parameters())
    x = torch.empty(1, *cfg['input_size'], device='meta')
    with FlopCounterMode(display=False) as counter:
        model(x)
    return params, counter.get_total_flops() / 2e9, cfg


def main() -> None:
    print('| model | embed dim | depth | patch | input | tokens | params (M) | GMACs | default tag | tags |')
    print('|---|---|---|---|---|---|---|---|---|---|')
    for name in timm.list_models('patchconvnet_*'):
        params, gmacs, cfg = measure(name)
        model = timm.create_model(name, device='meta')
        tags = [t.split('.', 1)[1] for t in timm.list_pretrained(f'{name}.*')]
        size = cfg['input_size'][-1]
        grid = cfg['pool_size']
        print(f"| `{name}` | {model.embed_dim} | {len(model.blocks)} | {model.patch_size} | {size} | "
              f"{grid[0]}x{grid[1]} | {params / 1e6:.2f} | {gmacs:.3g} | {cfg.get('tag') or '-'} | "
              f"{', '.join(tags) or '-'} |")


if __name__ == '__main__':
    main()
