"""Parity with the official implementation (facebookresearch/deit patchconvnet_models.py) and its checkpoints."""
import json

import pytest
import timm
import torch
from safetensors.torch import load_file

from timm_patchconvnet import checkpoint_filter_fn, get_attention_map

TOL = dict(rtol=0, atol=1e-5)


def _load_tiny(official_tiny, file=None):
    """The official tiny model (d=48, depth 2, 10 classes) through timm's real pretrained-loading path."""
    overlay = dict(file=str(file or official_tiny['weights']), num_classes=10)
    return timm.create_model(
        'patchconvnet_s60_p16', embed_dim=48, depth=2, num_classes=10, pretrained=True,
        pretrained_cfg_overlay=overlay).eval()


@torch.no_grad()
def test_logits_features_and_attention_match_official(official_tiny):
    model = _load_tiny(official_tiny)
    x, ref = official_tiny['input'], official_tiny['outputs']
    features = model.forward_features(x)
    torch.testing.assert_close(model(x), ref['logits'], **TOL)
    torch.testing.assert_close(model.forward_head(features, pre_logits=True), ref['features'], **TOL)

    tokens, cls_tokens = model._pool_inputs(features)
    q, kv = model.attn_pool._queries_and_keys(tokens, cls_tokens)
    torch.testing.assert_close(model.attn_pool.attn.attention_logits(q, kv), ref['attn_logits'], **TOL)
    torch.testing.assert_close(model.attn_pool.attention(tokens, cls_tokens), ref['attn'], **TOL)
    torch.testing.assert_close(model.forward_attention(features).mean(1)[:, 0], ref['attn_patches'], **TOL)
    raw_maps = get_attention_map(model, x, upsample=False, normalize=False)
    torch.testing.assert_close(raw_maps, ref['attn_patches'], **TOL)


@torch.no_grad()
def test_deit_style_pth_checkpoint_loads(official_tiny, tmp_path):
    """Official checkpoints are torch pickles, `{'model': state_dict}`, possibly saved from DDP (`module.`)."""
    state_dict = load_file(official_tiny['weights'])
    path = tmp_path / 'official.pth'
    torch.save({'model': {f'module.{k}': v for k, v in state_dict.items()}, 'epoch': 299}, path)
    model = _load_tiny(official_tiny, file=path)
    torch.testing.assert_close(model(official_tiny['input']), official_tiny['outputs']['logits'], **TOL)


@torch.no_grad()
def test_outputs_do_not_depend_on_memory_format_or_checkpointing(official_tiny):
    model = _load_tiny(official_tiny)
    x, logits = official_tiny['input'], official_tiny['outputs']['logits']
    torch.testing.assert_close(model(x.contiguous(memory_format=torch.channels_last)), logits, **TOL)
    model.set_grad_checkpointing()
    torch.testing.assert_close(model(x), logits, **TOL)


@torch.no_grad()
def test_the_fused_inference_model_still_matches_official(official_tiny):
    """timm's reparameterize_model folds the norm affine and layer scale into the convs and fuses GELU and the
    residual add into oneDNN's convolutions: the same function, to the official outputs' 1e-5."""
    model = timm.utils.reparameterize_model(_load_tiny(official_tiny))
    assert all(type(block).__name__ == 'FusedConvBlock' for block in model.blocks)
    x, ref = official_tiny['input'], official_tiny['outputs']
    torch.testing.assert_close(model(x), ref['logits'], **TOL)
    torch.testing.assert_close(model.double()(x.double()).float(), ref['logits'], **TOL)  # the portable path
    raw_maps = get_attention_map(model.float(), x, upsample=False, normalize=False)
    torch.testing.assert_close(raw_maps, ref['attn_patches'], **TOL)


def official_s60_state_dict(keys_file, **overrides):
    shapes = json.loads(keys_file.read_text())
    generator = torch.Generator().manual_seed(0)
    state_dict = {k: torch.randn(shape, generator=generator) for k, shape in shapes.items()}
    state_dict.update(overrides)
    return state_dict


@pytest.mark.parametrize('variant', ['patchconvnet_s60_p16', 'patchconvnet_s60_p8', 'patchconvnet_s60_p4'])
def test_official_s60_checkpoint_loads_strictly_for_every_patch_size(official_s60_keys, variant):
    state_dict = official_s60_state_dict(official_s60_keys)
    assert len(state_dict) == 807
    model = timm.create_model(variant, num_classes=1000)
    model.load_state_dict(checkpoint_filter_fn({'model': state_dict}, model), strict=True)
    torch.testing.assert_close(model.stem.conv4.weight, state_dict['patch_embed.proj.6.0.weight'], rtol=0, atol=0)
    torch.testing.assert_close(model.blocks[59].se.conv_expand.bias,
                               state_dict['blocks.59.attn.qkv_pos.4.conv_expand.bias'], rtol=0, atol=0)
    torch.testing.assert_close(model.attn_pool.mlp.fc2.weight,
                               state_dict['blocks_token_only.0.mlp.fc2.weight'], rtol=0, atol=0)


def test_official_s60_file_loads_through_create_model_with_a_new_head(official_s60_keys, tmp_path):
    """Fine-tuning start: the 1000-class S60 file, a 10-class /4 model (the head is left to train)."""
    state_dict = official_s60_state_dict(official_s60_keys)
    path = tmp_path / 's60_224_1k.pth'
    torch.save({'model': state_dict}, path)
    model = timm.create_model('patchconvnet_s60_p4', num_classes=10, pretrained=True,
                              pretrained_cfg_overlay=dict(file=str(path), num_classes=1000))
    torch.testing.assert_close(model.cls_token, state_dict['cls_token'], rtol=0, atol=0)
    assert model.head.weight.shape == (10, 384)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_official_s60_multi_checkpoint_loads_strictly(official_s60_keys):
    """S60_multi: 1000 class tokens and a ModuleList of 1000 Linear(384, 1) heads, stacked into one."""
    generator = torch.Generator().manual_seed(1)
    heads = {}
    for i in range(1000):
        heads[f'head.{i}.weight'] = torch.randn(1, 384, generator=generator)
        heads[f'head.{i}.bias'] = torch.randn(1, generator=generator)
    state_dict = official_s60_state_dict(
        official_s60_keys, cls_token=torch.randn(1, 1000, 384, generator=generator))
    del state_dict['head.weight'], state_dict['head.bias']
    state_dict.update(heads)

    model = timm.create_model('patchconvnet_s60_multi_p16')
    model.load_state_dict(checkpoint_filter_fn(state_dict, model), strict=True)
    assert sum(p.numel() for p in model.parameters()) == 25_614_712
    torch.testing.assert_close(model.head.weight[123], heads['head.123.weight'][0], rtol=0, atol=0)
    torch.testing.assert_close(model.head.bias[999], heads['head.999.bias'][0], rtol=0, atol=0)

    # the same weights for another number of classes: every class token starts from the mean of the official ones
    small = timm.create_model('patchconvnet_s60_multi_p16', num_classes=5)
    adapted = checkpoint_filter_fn(state_dict, small)
    del adapted['head.weight'], adapted['head.bias']
    assert not small.load_state_dict(adapted, strict=False).unexpected_keys
    expected = state_dict['cls_token'].mean(1, keepdim=True).expand(-1, 5, -1)
    torch.testing.assert_close(small.cls_token.detach(), expected)


def test_the_fixtures_rebuild_bit_for_bit_from_the_official_code(deit_checkout, tmp_path):
    from fixtures.make_official_fixtures import main as make_fixtures
    assert make_fixtures([str(deit_checkout), '--out', str(tmp_path), '--check']) == 0
