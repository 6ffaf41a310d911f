"""The batch RandAugment and TrivialAugmentWide (data/batch_auto_augment.py) against the libraries' own: each
operation (data/batch_ops.py) against timm's PIL function on the same arguments, and each policy's statistics on
1,000 copies of one image against timm's (PIL) and torchvision's per-image policies, with broken variants that the
same checks catch. The images are 24 x 40, so that a swapped height and width shows."""
import random
from typing import Callable

import numpy as np
import pytest
import torch
from PIL import Image
from timm.data.auto_augment import NAME_TO_OP, rand_augment_transform
from torchvision.transforms import v2

from timm_patchconvnet.data.batch_auto_augment import _TRIVIAL_OPS, BatchRandAugment, BatchTrivialAugmentWide
from timm_patchconvnet.data.batch_ops import COLOR_OPS, GEOMETRIC_OPS, warp
from timm_patchconvnet.data.transforms import rand_augment_hparams

N = 1000  # copies per statistic
TIMM_FUNCTIONS = {function.__name__: function for function in NAME_TO_OP.values()}
HPARAMS = rand_augment_hparams(dict(input_size=(3, 32, 32), mean=(0.5, 0.4, 0.3)))
FILL = tuple(v / 255 for v in HPARAMS['img_mean'])
# arguments as timm's level functions give them (enhance factors 0.1..1.9, posterize bits, solarize thresholds...)
ARGUMENTS = dict(brightness=(0.3, 1.7), color=(0.1, 1.9), contrast=(0.4, 1.6), sharpness=(0.1, 1.9),
                 posterize=(1, 4, 7), solarize=(64, 200), solarize_add=(30, 110), invert=(0,), auto_contrast=(0,),
                 equalize=(0,))
GEOMETRIC_ARGUMENTS = dict(shear_x=(-0.3, 0.2), shear_y=(0.3,), translate_x_rel=(0.25, -0.4), translate_y_rel=(-0.3,),
                           translate_x_abs=(7,), translate_y_abs=(-5,), rotate=(-27, 15))


HEIGHT, WIDTH = 24, 40


def photo(kind: int = 0) -> np.ndarray:
    """A (24, 40, 3) uint8 image with gradients, noise and a bright square; kind 2 has little contrast."""
    rng = np.random.default_rng(kind)
    y, x = np.mgrid[:HEIGHT, :WIDTH]
    image = np.stack([x * 5, y * 8, (x + y) * 3], -1) + rng.normal(0, 20, (HEIGHT, WIDTH, 3))
    image[8:16, 10:20] = 230
    if kind == 2:
        image = image * 0.3 + 60
    return np.clip(image, 0, 255).astype(np.uint8)


def as_batch(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255


def as_levels(batch: torch.Tensor) -> np.ndarray:
    return batch[0].permute(1, 2, 0).numpy() * 255


def seed(value: int = 0) -> None:
    random.seed(value)
    np.random.seed(value)
    torch.manual_seed(value)


@pytest.mark.parametrize('name', COLOR_OPS)
def test_each_colour_operation_equals_timms_pil_function(name):
    """To PIL's rounding: within 1.5 of 255 levels (the blends round the grey image and the result; we do not)."""
    for kind in range(3):
        for argument in ARGUMENTS[name]:
            image = photo(kind)
            timm_arguments = (argument,) if name not in ('invert', 'auto_contrast', 'equalize') else ()
            expected = TIMM_FUNCTIONS[name](Image.fromarray(image), *timm_arguments)
            ours = COLOR_OPS[name](as_batch(image), torch.tensor([float(argument)]))
            assert np.abs(as_levels(ours) - np.asarray(expected, dtype=np.float64)).max() < 1.5, (kind, argument)


@pytest.mark.parametrize('name', GEOMETRIC_OPS)
def test_each_geometric_operation_resamples_like_pil(name):
    """Nearest: the same pixels as PIL's Image.transform, the fill included, but where a sample falls half-way
    between two pixels (PIL and torch break the tie differently); bilinear: within 1.5 levels, edges included."""
    image = photo()
    for argument in GEOMETRIC_ARGUMENTS[name]:
        data = torch.tensor([GEOMETRIC_OPS[name](float(argument), HEIGHT, WIDTH)])
        for mode, resample in (('nearest', Image.NEAREST), ('bilinear', Image.BILINEAR)):
            expected = TIMM_FUNCTIONS[name](Image.fromarray(image), argument, resample=resample,
                                            fillcolor=HPARAMS['img_mean'])
            ours = warp(as_batch(image), data, torch.tensor(FILL), mode)
            difference = np.abs(as_levels(ours) - np.asarray(expected, dtype=np.float64))
            if mode == 'nearest':
                assert (difference.max(-1) < 0.5).mean() > 0.85, argument  # a shear of 0.2 ties on 1 row in 5
            else:
                assert difference.max() < 1.5, argument
    assert not torch.equal(warp(as_batch(image), data, torch.tensor(FILL), 'nearest'), as_batch(image))


def statistics(policy: Callable[[torch.Tensor], torch.Tensor], image: np.ndarray) -> dict:
    """Of N augmentations of `image` ([0, 1] batch in, out): the share changed by more than a level on average, the
    number of distinct results, and the upper quantiles of the mean absolute change in levels."""
    seed()
    out = policy(as_batch(image).expand(N, -1, -1, -1).contiguous())
    change = (out - as_batch(image)).abs().flatten(1).mean(1) * 255
    return dict(changed=float((change > 1).float().mean()), distinct=len({round(float(v), 3) for v in
                                                                          out.flatten(1).sum(1)}),
                quantiles=np.quantile(change.numpy(), [0.5, 0.75, 0.9]))


def per_image(transform: Callable) -> Callable[[torch.Tensor], torch.Tensor]:
    """A PIL policy on each image of a [0, 1] batch, in turn."""
    def run(batch: torch.Tensor) -> torch.Tensor:
        images = (batch.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
        return torch.stack([torch.from_numpy(np.asarray(transform(Image.fromarray(i)), dtype=np.float32))
                            for i in images]).permute(0, 3, 1, 2) / 255
    return run


def assert_alike(ours: dict, reference: dict) -> None:
    assert abs(ours['changed'] - reference['changed']) < 0.05
    # the median, 75th and 90th percentiles of the change within 30% of the reference's
    assert np.all(np.abs(ours['quantiles'] - reference['quantiles']) < 0.3 * reference['quantiles'])


@pytest.mark.parametrize('config', ['rand-m9-mstd0.5', 'rand-m9-mstd0.5-inc1', 'rand-m6-n3-mstd1'])
def test_rand_augment_changes_images_as_timms_does_each_its_own_way(config):
    image = photo()
    timm_policy = rand_augment_transform(config, dict(HPARAMS, interpolation=Image.BILINEAR))
    reference = statistics(per_image(timm_policy), image)
    ours = statistics(BatchRandAugment(config, HPARAMS), image)
    assert_alike(ours, reference)
    assert ours['distinct'] > 0.9 * reference['distinct'] > 450  # a draw per image, like timm's
    # broken: a weaker magnitude, and one draw for the whole batch, each caught by the same checks
    with pytest.raises(AssertionError):
        assert_alike(statistics(BatchRandAugment(config.replace('-m9', '-m2').replace('-m6', '-m1'), HPARAMS),
                                image), reference)
    shared = BatchRandAugment(config, HPARAMS)

    def one_draw_for_all(count: int, height: int, width: int):
        return [{name: ([*range(count)], args * count) for name, (_, args) in layer.items()}
                for layer in BatchRandAugment.draw(shared, 1, height, width)]
    shared.draw = one_draw_for_all
    assert statistics(shared, image)['distinct'] < 20


def applied(config: str, draws: int, batch: bool) -> dict:
    """Over `draws` images: how many times each operation applied, and the mean size of its first argument, by timm's
    function name; from timm's own RandAugment (its operations record instead of transforming) or the batch draw."""
    records = []
    if batch:
        for layer in BatchRandAugment(config, HPARAMS).draw(draws, 32, 32):
            records += [(name, arg) for name, (_, args) in layer.items() for arg in args]
    else:
        policy = rand_augment_transform(config, dict(HPARAMS))
        for op in policy.ops:
            op.aug_fn = (lambda name: lambda image, *args, **_: records.append((name, args[0] if args else 0.)))(
                op.aug_fn.__name__)
        for _ in range(draws):
            policy(None)
    names = sorted({name for name, _ in records})
    return {name: (sum(1 for n, _ in records if n == name),
                   float(np.mean([abs(a) for n, a in records if n == name]))) for name in names}


@pytest.mark.parametrize('config', ['rand-m9-mstd0.5-inc1', 'rand-m7-mstd101', 'rand-m12-mmax15-mstd2',
                                    'rand-m9-p0.8-tweights'])
def test_the_draws_follow_timms_policy(config):
    """timm's branches (magnitude noise, uniform magnitudes past mstd 100, a raised maximum, the chance per
    operation, weighted choice without replacement): each operation applies as often as in timm's own policy (within
    5 standard deviations) with arguments of the same mean size (within 8%, where it applied 200 times or more); a
    weaker magnitude fails."""
    seed()
    reference, ours = applied(config, 4000, batch=False), applied(config, 4000, batch=True)
    assert sorted(ours) == sorted(reference)
    common = [name for name, (count, _) in reference.items() if count >= 200]  # the rare ones' means are noise
    assert len(common) >= 5
    for name, (count, size) in reference.items():
        assert abs(ours[name][0] - count) < 5 * count ** 0.5 + 5, name
        assert name not in common or abs(ours[name][1] - size) <= 0.08 * size + 1e-6, name
    weaker = applied(config.replace('-m9', '-m6').replace('-m7', '-m5').replace('-m12', '-m9'), 4000, batch=True)
    assert any(abs(weaker[name][1] - reference[name][1]) > 0.08 * reference[name][1] for name in common)


def test_trivial_augment_changes_images_as_torchvisions_does_each_its_own_way():
    image = photo()
    reference = statistics(per_image(v2.TrivialAugmentWide()), image)
    ours = statistics(BatchTrivialAugmentWide(), image)
    assert_alike(ours, reference)
    assert ours['distinct'] > 0.9 * reference['distinct'] > 300
    batchwise = v2.TrivialAugmentWide()  # torchvision on a batch tensor: one operation for all
    assert statistics(lambda b: batchwise((b * 255).round().to(torch.uint8)).float() / 255, image)['distinct'] < 5


@pytest.mark.parametrize('policy', [BatchRandAugment('rand-m9-n3-mstd0.5', HPARAMS), BatchTrivialAugmentWide()])
def test_each_image_gets_its_own_draw_and_keeps_its_place(policy):
    """The batch sorted by operation and put back: each image as if it had been augmented alone with its draw."""
    seed()
    batch = torch.rand(64, 3, 32, 32)
    layers = policy.draw(64, 32, 32)
    policy.draw = lambda count, height, width: layers
    out = policy(batch)
    assert out.shape == batch.shape and out.dtype == batch.dtype and 0 <= out.min() and out.max() <= 1
    for image in range(64):
        policy.draw = lambda count, height, width: [
            {name: ([0], [args[chosen.index(image)]]) for name, (chosen, args) in layer.items() if image in chosen}
            for layer in layers]
        assert torch.allclose(policy(batch[image:image + 1]), out[image:image + 1], atol=1e-6), image
    assert sum(len(chosen) for layer in layers for chosen, _ in layer.values()) > 50  # most images drew something


@pytest.mark.parametrize('name', ['ShearX', 'ShearY', 'TranslateX', 'TranslateY', 'Rotate', 'Posterize', 'Solarize'])
def test_trivial_augment_applies_each_operation_as_torchvision_does(name):
    """Each geometric operation (both signs) and the two with levels, at a few magnitudes, against torchvision's own
    application of it to the PIL image, nearest pixel and black fill: the same pixels but at ties."""
    policy, image = BatchTrivialAugmentWide(), photo()
    reference = v2.TrivialAugmentWide()
    for magnitude in {'Posterize': (2., 5.), 'Solarize': (0.3, 0.8), 'Rotate': (-40., 25.)}.get(name, (-0.4, 7.)):
        magnitude = magnitude if name not in ('TranslateX', 'TranslateY') or abs(magnitude) > 1 else magnitude * 20
        expected = reference._apply_image_or_video_transform(Image.fromarray(image), name, magnitude,
                                                             interpolation=v2.InterpolationMode.NEAREST,
                                                             fill={Image.Image: None})
        op, argument = _TRIVIAL_OPS[name]
        policy.draw = lambda count, height, width: [{op: ([0], [argument(magnitude)])}]
        ours = as_levels(policy(as_batch(image)))
        assert (np.abs(ours - np.asarray(expected, dtype=np.float64)).max(-1) < 0.5).mean() > 0.9, magnitude


def test_an_empty_batch_is_returned_as_it_is():
    empty = torch.zeros(0, 3, HEIGHT, WIDTH)
    for policy in (BatchRandAugment('rand-m9-mstd0.5', HPARAMS), BatchTrivialAugmentWide()):
        assert policy(empty).shape == empty.shape


def test_a_policy_timm_has_but_the_batch_does_not_is_refused_in_one_line():
    with pytest.raises(ValueError, match='--loader pil'):
        BatchRandAugment('rand-m9-t3a', HPARAMS)  # timm's 3-augment set: blur and desaturation
