"""The model: variants, sizes, options, the timm contract beyond timm's own tests, and clear errors."""
import pytest
import timm
import torch
import torch.nn.functional as F
from timm.optim import create_optimizer_v2

from timm_patchconvnet import PatchConvNet, PretrainedWeightsUnavailableError

# Parameter counts with 1000 classes, counted from the official code (paper / deit README).
OFFICIAL_PARAMS = {
    'patchconvnet_s60_p16': 25_231_096,
    'patchconvnet_s120_p16': 47_723_896,
    'patchconvnet_b60_p16': 99_388_936,
    'patchconvnet_b120_p16': 188_611_336,
    'patchconvnet_l60_p16': 176_009_576,
    'patchconvnet_l120_p16': 334_294_376,
    'patchconvnet_s60_multi_p16': 25_614_712,
    'patchconvnet_s60_p8': 25_231_096,
    'patchconvnet_s60_p4': 25_231_096,
}


def _num_params(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize('variant, expected', OFFICIAL_PARAMS.items())
def test_parameter_counts_equal_the_official_ones(variant, expected):
    model = timm.create_model(variant, num_classes=1000, device='meta')
    assert _num_params(model) == expected


def test_small_variants_sizes():
    assert 1e6 <= _num_params(timm.create_model('patchconvnet_ti12_p4')) <= 3e6
    assert _num_params(timm.create_model('patchconvnet_test_p4')) < 2e5


def test_entry_points_accept_overrides_of_every_argument():
    model = timm.create_model('patchconvnet_s60_p16', embed_dim=64, depth=3, num_heads=2, mlp_ratio=2,
                              init_values=0.5, num_classes=7, in_chans=1)
    assert (model.embed_dim, len(model.blocks), model.num_classes, model.in_chans) == (64, 3, 7, 1)
    assert model.attn_pool.attn.num_heads == 2 and model.attn_pool.mlp.fc1.out_features == 128
    assert torch.all(model.blocks[0].gamma == 0.5)
    assert model(torch.randn(1, 1, 48, 48)).shape == (1, 7)


@pytest.mark.parametrize('patch_size', [4, 8, 16])
@pytest.mark.parametrize('height, width', [(32, 32), (37, 53), (61, 20), (16, 16)])
def test_any_size_and_aspect_ratio(patch_size, height, width):
    model = timm.create_model('patchconvnet_test_p4', patch_size=patch_size, num_classes=5).eval()
    with torch.no_grad():
        features = model.forward_features(torch.randn(2, 3, height, width))
        logits = model.forward_head(features)
    grid = [height, width]
    for stride in {4: (2, 2, 1, 1), 8: (2, 2, 2, 1), 16: (2, 2, 2, 2)}[patch_size]:
        grid = [-(-n // stride) for n in grid]
    assert features.shape == (2, 48, *grid)
    assert logits.shape == (2, 5) and torch.isfinite(logits).all()


def test_patch_sizes_share_parameter_shapes():
    shapes = {p: {k: v.shape for k, v in timm.create_model('patchconvnet_test_p4', patch_size=p).state_dict().items()}
              for p in (4, 8, 16)}
    assert shapes[4] == shapes[8] == shapes[16]


ABLATIONS = {
    'paper': {},
    'avg_pool': dict(global_pool='avg'),
    'batchnorm': dict(trunk_norm='batchnorm'),
    'multi_head': dict(num_heads=4),
    'linear_stem': dict(stem_type='linear'),
    'per_class': dict(class_tokens='per_class'),
    'dropouts': dict(drop_rate=0.1, proj_drop_rate=0.1, attn_drop_rate=0.1, drop_path_rate=0.1),
}


@pytest.mark.parametrize('options', ABLATIONS.values(), ids=ABLATIONS.keys())
def test_every_option_trains(options):
    """A few optimizer steps on a learnable batch lower its loss, and every parameter gets a gradient."""
    model = timm.create_model('patchconvnet_test_p4', num_classes=4, init_values=0.1, **options).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    y = torch.arange(16) % 4
    x = 0.1 * torch.randn(16, 3, 32, 32)
    for i, label in enumerate(y.tolist()):  # the class is the bright quadrant
        row, col = divmod(label, 2)
        x[i, :, 16 * row:16 * (row + 1), 16 * col:16 * (col + 1)] += 1
    losses = []
    for _ in range(50):  # seeds 0-15: 25 steps left 11 of 112 (option, seed) pairs above half the first loss, 50 none
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
        optimizer.step()
        losses.append(loss.item())
    assert max(losses[-3:]) < 0.5 * losses[0], losses


@pytest.mark.parametrize('options', ABLATIONS.values(), ids=ABLATIONS.keys())
@torch.no_grad()
def test_fused_inference_model_computes_the_same(options):
    """`timm.utils.reparameterize_model` (ConvBlock.fuse) on every option, BatchNorm folded with real statistics."""
    model = timm.create_model('patchconvnet_test_p4', num_classes=5, init_values=0.5, **options)
    for _ in range(3):  # BatchNorm's running statistics away from 0 / 1
        model.train()(torch.randn(8, 3, 32, 32) * 2 + 1)
    model.eval()
    for p in model.parameters():
        p.add_(0.05 * torch.randn_like(p))
    fused = timm.utils.reparameterize_model(model)
    assert type(model.blocks[0]).__name__ == 'ConvBlock'  # the original is untouched (a copy was fused)
    x = torch.randn(3, 3, 40, 24)
    torch.testing.assert_close(fused(x), model(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fused.forward_intermediates(x)[1][-1], model.forward_intermediates(x)[1][-1],
                               rtol=1e-5, atol=1e-5)


def test_ablation_structures():
    assert timm.create_model('patchconvnet_test_p4', global_pool='avg').attn_pool is None
    assert isinstance(timm.create_model('patchconvnet_test_p4', trunk_norm='batchnorm').blocks[0].norm,
                      torch.nn.BatchNorm2d)
    linear = timm.create_model('patchconvnet_test_p4', stem_type='linear', patch_size=4)
    assert linear.stem.proj.kernel_size == (4, 4) and linear.stem.proj.stride == (4, 4)


def test_per_class_tokens_any_number_of_classes():
    model = timm.create_model('patchconvnet_test_p4', class_tokens='per_class', num_classes=3).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        features = model.forward_features(x)
        attention = model.forward_attention(features)
        embeddings = model.forward_class_tokens(features)
        logits = model.forward_head(features)
    assert model.cls_token.shape == (1, 3, 48)
    assert attention.shape == (2, 1, 3, 8, 8)
    # keys are the patches only: each class token's map is a full distribution over the image
    torch.testing.assert_close(attention.sum((-2, -1)), torch.ones(2, 1, 3))
    # class k's logit comes from class token k alone, through its own linear unit
    expected = (embeddings * model.head.weight).sum(-1) + model.head.bias
    torch.testing.assert_close(logits, expected)
    torch.testing.assert_close(model.forward_head(features, pre_logits=True), embeddings.mean(1))


def test_single_token_attention_leaves_out_its_self_weight():
    model = timm.create_model('patchconvnet_test_p4').eval()
    with torch.no_grad():
        features = model.forward_features(torch.randn(2, 3, 32, 32))
        on_patches = model.forward_attention(features).sum((-2, -1))
        full = model.attn_pool.attention(*model._pool_inputs(features))
    torch.testing.assert_close(on_patches + full[..., 0], torch.ones(2, 1, 1))


def test_reset_classifier_per_class_starts_new_tokens_from_the_mean():
    model = timm.create_model('patchconvnet_test_p4', class_tokens='per_class', num_classes=4)
    mean_token = model.cls_token.detach().mean(1, keepdim=True)
    model.reset_classifier(6)
    assert model.cls_token.shape == (1, 6, 48) and model.head.weight.shape == (6, 48)
    torch.testing.assert_close(model.cls_token.detach(), mean_token.expand(-1, 6, -1))
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 6)


def test_reset_classifier_pooling_switches():
    model = timm.create_model('patchconvnet_test_p4', num_classes=5).eval()
    x = torch.randn(2, 3, 32, 32)
    model.reset_classifier(3, 'avg')
    assert model.attn_pool is None and model.cls_token is None and model(x).shape == (2, 3)
    with pytest.raises(ValueError, match="no attention pool"):
        model.reset_classifier(3, 'token')
    model.reset_classifier(0, '')
    assert model(x).shape == (2, 48, 8, 8)
    model.reset_classifier(4)  # no pooling plus a classifier: logits at every location
    assert model(x).shape == (2, 4, 8, 8)


def test_features_only_and_intermediates():
    model = timm.create_model('patchconvnet_test_p4', features_only=True, out_indices=(0, 2))
    features = model(torch.randn(2, 3, 40, 24))
    assert [f.shape for f in features] == [(2, 48, 10, 6)] * 2
    assert model.feature_info.reduction() == [4, 4]
    full = timm.create_model('patchconvnet_test_p4').eval()
    with torch.no_grad():
        final, intermediates = full.forward_intermediates(torch.randn(1, 3, 32, 32), indices=[1])
    assert final.shape == intermediates[0].shape == (1, 48, 8, 8)


def test_layer_decay_and_weight_decay_groups():
    model = timm.create_model('patchconvnet_test_p4')
    optimizer = create_optimizer_v2(model, 'adamw', lr=1e-3, weight_decay=0.05, layer_decay=0.75)
    scales = sorted({group['lr_scale'] for group in optimizer.param_groups})
    assert len(scales) == len(model.blocks) + 2  # stem, each block, pooling + head
    no_decay = {id(p) for g in optimizer.param_groups if g['weight_decay'] == 0 for p in g['params']}
    assert id(model.cls_token) in no_decay and id(model.blocks[0].gamma) in no_decay
    assert id(model.blocks[0].conv1.weight) not in no_decay


def test_lower_precision_and_meta_device():
    model = timm.create_model('patchconvnet_test_p4', dtype=torch.bfloat16).eval()
    assert model(torch.randn(1, 3, 32, 32, dtype=torch.bfloat16)).dtype == torch.bfloat16
    # mixed precision: the residual stream stays float32, as in the official code (gamma multiplies in float32)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert timm.create_model('patchconvnet_test_p4').forward_features(torch.randn(1, 3, 32, 32)).dtype == \
            torch.float32
    big = timm.create_model('patchconvnet_b120_p16', device='meta')
    assert next(big.parameters()).is_meta


def test_clear_errors_for_bad_input():
    model = timm.create_model('patchconvnet_test_p4')
    with pytest.raises(AssertionError, match='Expected 3 input channels, got 1'):
        model(torch.randn(1, 1, 32, 32))
    with pytest.raises(AssertionError, match='height 3 is below the patch size 4'):
        model(torch.randn(1, 3, 3, 32))
    with pytest.raises(AssertionError, match=r'\(B, C, H, W\)'):
        model(torch.randn(3, 32, 32))


def test_clear_errors_for_bad_options():
    with pytest.raises(RuntimeError, match=r'Unknown model \(patchconvnet_s61_p16\)'):
        timm.create_model('patchconvnet_s61_p16')
    with pytest.raises(TypeError, match='not_an_option'):
        timm.create_model('patchconvnet_test_p4', not_an_option=1)
    for options, message in [
        (dict(global_pool='max'), r"global_pool='max' is not supported; choose one of \('token', 'avg', ''\)"),
        (dict(class_tokens='many'), 'class_tokens'),
        (dict(trunk_norm='groupnorm'), 'trunk_norm'),
        (dict(stem_type='vit'), 'stem_type'),
        (dict(patch_size=5), r'patch_size=5 is not supported; choose one of \(16, 8, 4\)'),
        (dict(embed_dim=50), 'multiple of 8'),
        (dict(num_heads=5), 'not divisible by num_heads=5'),
        (dict(class_tokens='per_class', global_pool='avg'), "needs global_pool='token'"),
    ]:
        with pytest.raises(ValueError, match=message):
            PatchConvNet(**{'embed_dim': 48, 'depth': 1, **options})


def test_pretrained_without_weights_fails_loudly(tmp_path, monkeypatch):
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    with pytest.raises(PretrainedWeightsUnavailableError, match='No pretrained weights are published') as err:
        timm.create_model('patchconvnet_l60_p16', pretrained=True)
    for way in ('pretrained_cfg_overlay=dict(file=', 'local-dir:', 'HF_HUB_OFFLINE=1'):
        assert way in str(err.value)

    missing = tmp_path / 'missing.safetensors'
    with pytest.raises(PretrainedWeightsUnavailableError, match=f'Tried: file {missing}'):
        timm.create_model('patchconvnet_test_p4', pretrained=True, pretrained_cfg_overlay=dict(file=str(missing)))


def test_pretrained_tag_on_the_hub_fails_loudly_offline(monkeypatch):
    import huggingface_hub.constants
    import timm_patchconvnet.pretrained
    monkeypatch.setattr(huggingface_hub.constants, 'HF_HUB_OFFLINE', True)
    monkeypatch.setattr(timm_patchconvnet.pretrained, 'UNPUBLISHED_TAGS', {})  # as once they are published
    with pytest.raises(PretrainedWeightsUnavailableError) as err:
        timm.create_model('patchconvnet_ti12_p4.idc', pretrained=True)
    message = str(err.value)
    assert 'Tried: hf_hub_id timm-patchconvnet/patchconvnet_ti12_p4.idc' in message
    assert 'models--timm-patchconvnet--patchconvnet_ti12_p4.idc' in message


@pytest.mark.parametrize('fuse', [False, True], ids=['train', 'fused-eval'])
def test_torch_compile_takes_the_whole_model_in_one_graph(fuse, tmp_path, monkeypatch):
    """fullgraph=True fails on any graph break; training (forward and backward, with gradient checkpointing) and
    the fused inference model both compile and compute what eager computes."""
    # a fresh inductor cache: kernels cached by another run for another CPU (AVX-512 against AVX2) gave NaN
    monkeypatch.setenv('TORCHINDUCTOR_CACHE_DIR', str(tmp_path / 'inductor'))
    model = timm.create_model('patchconvnet_test_p4', num_classes=4, init_values=0.5)
    x = torch.randn(2, 3, 32, 32)
    if fuse:
        model = timm.utils.reparameterize_model(model.eval())
        with torch.no_grad():
            torch.testing.assert_close(torch.compile(model, fullgraph=True)(x), model(x), rtol=1e-5, atol=1e-5)
        return
    model.set_grad_checkpointing()
    compiled = torch.compile(model, fullgraph=True)
    compiled(x).sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model(x).sum().backward()
    for compiled_grad, p in zip(grads, model.parameters()):
        torch.testing.assert_close(compiled_grad, p.grad, rtol=1e-4, atol=1e-5)
