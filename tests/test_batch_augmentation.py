"""The recipes on decoded batches (`BatchRecipe`, per image) against the same recipes on PIL images (torchvision):
flip rates, the rotation range, colour ranges, one affine draw pixel by pixel, and the average augmented image of each
data set's recipe."""
import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms

from timm_patchconvnet.dataset_specs import DATASETS, Augmentation
from timm_patchconvnet.data.device_transforms import BatchPreprocess, BatchRecipe, batch_transforms
from timm_patchconvnet.data.transforms import pil_transforms

N = 1000  # augmented copies per path


def pil_path(augmentation: Augmentation, image: np.ndarray, n: int = N) -> torch.Tensor:
    """`n` augmentations of the (H, W, 3) uint8 `image` by the PIL recipe, as floats (n, 3, H, W) in [0, 1]."""
    pipeline = transforms.Compose([*pil_transforms(augmentation), transforms.ToTensor()])
    pil = Image.fromarray(image)
    return torch.stack([pipeline(pil) for _ in range(n)])


def batch_path(augmentation: Augmentation, image: np.ndarray, n: int = N) -> torch.Tensor:
    """The same by the batch recipe, all `n` in one batch."""
    batch = torch.from_numpy(image).permute(2, 0, 1).unsqueeze(0).repeat(n, 1, 1, 1).float() / 255
    transform = batch_transforms(augmentation)
    return batch if transform is None else transform(batch)


def both(augmentation: Augmentation, image: np.ndarray, n: int = N):
    torch.manual_seed(0)
    return pil_path(augmentation, image, n), batch_path(augmentation, image, n)


def test_flip_rates_match():
    """IDC's recipe (both flips, then a small rotation): where the bright corner lands, per quarter of the image."""
    image = np.zeros((50, 50, 3), dtype=np.uint8)
    image[:20, :20] = 255  # the top-left corner
    for images in both(DATASETS['idc'].augmentation, image):
        gray = images.mean(1)
        right = gray[:, :, 25:].sum((1, 2)) > gray[:, :, :25].sum((1, 2))
        bottom = gray[:, 25:, :].sum((1, 2)) > gray[:, :25, :].sum((1, 2))
        # each flip with probability 1/2, independently: 5 standard deviations of a rate over N images is 0.08
        assert abs(right.float().mean() - 0.5) < 0.08 and abs(bottom.float().mean() - 0.5) < 0.08
        assert abs((right & bottom).float().mean() - 0.25) < 0.07


def orientation(images: torch.Tensor) -> np.ndarray:
    """The angle in degrees of the bright bar in each image, from its second moments."""
    gray = images.mean(1).numpy()
    ys, xs = np.mgrid[:gray.shape[1], :gray.shape[2]]
    mass = gray.sum((1, 2))
    cx, cy = (gray * xs).sum((1, 2)) / mass, (gray * ys).sum((1, 2)) / mass
    dx, dy = xs[None] - cx[:, None, None], ys[None] - cy[:, None, None]
    mu20, mu02, mu11 = (gray * dx ** 2).sum((1, 2)), (gray * dy ** 2).sum((1, 2)), (gray * dx * dy).sum((1, 2))
    return np.degrees(0.5 * np.arctan2(2 * mu11, mu20 - mu02))


def test_rotation_range_matches():
    """A rotation of up to 10 degrees either way, uniform: |angle| <= 10, standard deviation 10 / sqrt(3)."""
    image = np.zeros((64, 64, 3), dtype=np.uint8)
    image[31:33, 8:56] = 255  # a horizontal bar through the centre
    angles = [orientation(images) for images in both(Augmentation(rotation=10), image)]
    for a in angles:
        assert np.abs(a).max() < 11  # a pixel's worth of error on a 48-pixel bar
        assert abs(a.std() - 10 / np.sqrt(3)) < 0.6 and abs(a.mean()) < 0.6
    assert abs(angles[0].std() - angles[1].std()) < 0.6
    # the same distribution: quantiles of the absolute angle agree to a degree
    assert np.allclose(np.quantile(np.abs(angles[0]), [.1, .5, .9]), np.quantile(np.abs(angles[1]), [.1, .5, .9]),
                       atol=1.0)


def colour_statistics(images: torch.Tensor) -> np.ndarray:
    """Per image: mean brightness, contrast (spread of the gray levels) and saturation (channel range)."""
    gray = images.mean(1)
    return np.stack([gray.mean((1, 2)).numpy(), gray.std((1, 2)).numpy(),
                     (images.amax(1) - images.amin(1)).mean((1, 2)).numpy()], axis=1)


def test_colour_ranges_match():
    """CIFAR-10's colour jitter (0.2 each): the spread of brightness, contrast and saturation, quantile by
    quantile, and their ranges."""
    image = np.zeros((32, 32, 3), dtype=np.uint8)
    image[:16] = (200, 80, 60)
    image[16:] = (60, 120, 200)
    stats = [colour_statistics(images) for images in both(Augmentation(color_jitter=(0.2, 0.2, 0.2)), image)]
    quantiles = [np.quantile(s, [.05, .25, .5, .75, .95], axis=0) for s in stats]
    assert np.allclose(quantiles[0], quantiles[1], atol=0.02), quantiles
    assert np.allclose(stats[0].min(0), stats[1].min(0), atol=0.03)  # the ranges
    assert np.allclose(stats[0].max(0), stats[1].max(0), atol=0.03)
    original = colour_statistics(torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255)[0]
    assert (stats[1].std(0) > original * 0.05).all()  # and it does move


@pytest.mark.parametrize('affine', [dict(degrees=(12, 12), scale=(1.1, 1.1), shear=(7, 7, -4, -4)),
                                    dict(degrees=(-30, -30), translate=(0.1, 0.1), scale=(0.8, 0.8))])
def test_one_affine_draw_gives_torchvisions_pixels(affine):
    """Ranges of one value each, and the same seed for the translation's draw: the same pixels as torchvision's
    RandomAffine on the PIL image but at ties of the nearest pixel, the zero fill included; a mirror image of the
    draw does not match."""
    image = (np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8)
    batch = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    for seed in range(5):
        torch.manual_seed(seed)
        pil = np.asarray(transforms.RandomAffine(**affine)(Image.fromarray(image)), dtype=np.float32) / 255
        torch.manual_seed(seed)  # the same translation draw, where there is one
        ours = BatchRecipe(Augmentation(affine=affine))(batch)[0].permute(1, 2, 0).numpy()
        assert (np.abs(ours - pil).max(-1) < 1e-6).mean() > 0.9, seed
    mirrored = dict(affine, degrees=tuple(-d for d in affine['degrees']))
    torch.manual_seed(0)
    mirror = BatchRecipe(Augmentation(affine=mirrored))(batch)[0].permute(1, 2, 0).numpy()
    torch.manual_seed(0)
    pil = np.asarray(transforms.RandomAffine(**affine)(Image.fromarray(image)), dtype=np.float32) / 255
    assert (np.abs(mirror - pil).max(-1) < 1e-6).mean() < 0.5


def test_flips_then_a_rotation_give_torchvisions_pixels(monkeypatch):
    """Both flips drawn and a rotation of 20 degrees, on a 20 x 34 image: the pixels of the PIL path's flips then
    RandomRotation but at ties; the opposite rotation does not match, so the direction and the order are tested."""
    image = (np.random.default_rng(1).random((20, 34, 3)) * 255).astype(np.uint8)
    batch = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    pil = transforms.Compose([transforms.RandomHorizontalFlip(1.0), transforms.RandomVerticalFlip(1.0),
                              transforms.RandomRotation((20, 20))])(Image.fromarray(image))
    pil = np.asarray(pil, dtype=np.float32) / 255
    monkeypatch.setattr(torch, 'rand', lambda *size, **options: torch.zeros(*size))  # every flip drawn
    matches = []
    for degrees in (20, -20):
        recipe = BatchRecipe(Augmentation(hflip=True, vflip=True, rotation=10))
        recipe.rotation = transforms.RandomRotation((degrees, degrees))
        ours = recipe(batch)[0].permute(1, 2, 0).numpy()
        matches.append((np.abs(ours - pil).max(-1) < 1e-6).mean())
    assert matches[0] > 0.9 and matches[1] < 0.5, matches


def structured_image(size: int) -> np.ndarray:
    """A colour gradient with an off-centre square: not symmetric under flips or rotations."""
    ys, xs = np.mgrid[:size, :size] / size
    image = np.stack([xs, ys, 1 - xs * ys], axis=-1) * 200
    image[size // 5:size // 2, size // 8:size // 3] = (250, 40, 40)
    return image.astype(np.uint8)


@pytest.mark.parametrize('name', list(DATASETS))
def test_each_recipe_averages_alike(name):
    """The mean of many augmented copies is the recipe's expectation: equal for both paths, and unequal to that of
    a recipe missing a step (which shows the comparison can fail)."""
    spec = DATASETS[name]
    image = structured_image(spec.img_size)
    # 4000 copies: over seeds 0-5 the difference was at most 0.0068 (1000 copies: up to 0.0122, at the bound)
    pil, batch = both(spec.augmentation, image, n=4000)
    difference = (pil.mean(0) - batch.mean(0)).abs().mean().item()
    assert difference < 0.012, difference
    steps = spec.augmentation.__dict__
    weaker = Augmentation(**{**steps, 'affine': None, 'rotation': 0}) if spec.augmentation.affine or \
        spec.augmentation.rotation else Augmentation(**{**steps, 'hflip': False})
    torch.manual_seed(0)
    assert (pil.mean(0) - batch_path(weaker, image, n=4000).mean(0)).abs().mean().item() > 3 * max(difference, 0.004)


def test_batch_preprocess_normalises_on_the_device_dtype_checked():
    preprocess = BatchPreprocess(None, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    images = torch.full((2, 3, 4, 4), 255, dtype=torch.uint8)
    assert torch.allclose(preprocess(images), torch.full((2, 3, 4, 4), 2.0))
    with pytest.raises(ValueError, match='uint8 batches'):
        preprocess(images.float())
    augmenting = BatchPreprocess(DATASETS['cifar10'].augmentation, (0.5,) * 3, (0.25,) * 3, channels_last=True)
    out = augmenting(torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8), train=True)
    assert out.is_contiguous(memory_format=torch.channels_last) and out.dtype == torch.float32
    assert not torch.equal(augmenting(images, train=False), augmenting(images, train=True))


def test_small_images_are_stored_at_their_size_and_resized_on_the_device_like_the_pil_path():
    """CIFAR-10 for a model at 64: the cache keeps 32 x 32 (a quarter of the bytes; 1/49 at 224), BatchPreprocess
    resizes after the data set's augmentation, close to the PIL path's bicubic resize of the same image."""
    from timm_patchconvnet.data.decode_cache import DecodeSettings
    from timm_patchconvnet.data.transforms import build_transform
    data_config = dict(input_size=(3, 64, 64), interpolation='bicubic', mean=(0.5,) * 3, std=(0.25,) * 3,
                       crop_pct=1.0)
    assert DecodeSettings.from_data_config(data_config, native_size=32) == DecodeSettings(32, 32, 'bicubic')
    assert DecodeSettings.from_data_config(data_config, native_size=96) == DecodeSettings(64, 64, 'bicubic')
    assert DecodeSettings.from_data_config(data_config) == DecodeSettings(64, 64, 'bicubic')
    rng = np.random.default_rng(0)
    image = np.kron(rng.integers(0, 256, (8, 8, 3)), np.ones((4, 4, 1))).astype(np.uint8)  # 32 x 32 blocks
    preprocess = BatchPreprocess.for_model(DATASETS['cifar10'].augmentation, data_config)
    ours = preprocess(torch.from_numpy(image).permute(2, 0, 1)[None])
    pil = build_transform('cifar10', data_config, train=False)(Image.fromarray(image))
    assert ours.shape == (1, 3, 64, 64) and (ours[0] - pil).abs().mean() * 0.25 < 0.01  # in [0, 1] units
    assert preprocess(torch.from_numpy(image).permute(2, 0, 1)[None].expand(4, -1, -1, -1).contiguous(),
                      train=True).shape == (4, 3, 64, 64)
