"""Random transforms (RT1, RT2): exact block masks, fresh randomness, seeding, clipping, gradients."""

from __future__ import annotations

import pytest
import torch

from atop.transforms import TRANSFORMS, MaskTransform, NoiseMaskTransform, block_mask, build_transform


def _images(n=4, size=32, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _blocks(mask: torch.Tensor, grid: int) -> torch.Tensor:
    """(N, 1, H, W) mask -> (N, grid, grid, bh * bw) pixels of each block."""
    n, _, h, w = mask.shape
    bh, bw = h // grid, w // grid
    return mask.view(n, grid, bh, grid, bw).permute(0, 1, 3, 2, 4).reshape(n, grid, grid, bh * bw)


@pytest.mark.parametrize("name", ["rt1", "rt2"])
def test_mask_is_binary_with_shape_n1hw(name):
    x = _images()
    x_t, mask = build_transform(name, seed=0, grid=8, mask_rate=0.25)(x)
    assert mask.shape == (4, 1, 32, 32)
    assert x_t.shape == x.shape
    assert set(mask.unique().tolist()) == {0.0, 1.0}


@pytest.mark.parametrize("name", ["rt1", "rt2"])
def test_grid8_on_32x32_masks_a_quarter_of_every_image(name):
    _, mask = build_transform(name, seed=3, grid=8, mask_rate=0.25)(_images(n=6))
    assert torch.equal(mask.mean(dim=(1, 2, 3)), torch.full((6,), 0.25))


@pytest.mark.parametrize(("grid", "rate", "size"), [(8, 0.25, 32), (4, 0.3, 16), (8, 0.5, 16), (4, 0.0, 16)])
def test_exactly_round_rate_times_grid_squared_whole_blocks(grid, rate, size):
    transform = MaskTransform(grid=grid, mask_rate=rate, seed=1)
    mask = transform.mask_for(_images(n=5, size=size))
    blocks = _blocks(mask, grid)
    # Every block is masked entirely or not at all ...
    assert torch.all(blocks.amin(dim=-1) == blocks.amax(dim=-1))
    # ... and each image has exactly round(rate * grid**2) masked blocks.
    per_image = blocks[..., 0].flatten(1).sum(dim=1)
    assert per_image.tolist() == [round(rate * grid * grid)] * 5


def test_block_mask_function_counts_blocks():
    g = torch.Generator().manual_seed(0)
    mask = block_mask(3, 16, 16, grid=4, rate=0.5, generator=g, device="cpu")
    assert mask.shape == (3, 1, 16, 16)
    assert _blocks(mask, 4)[..., 0].flatten(1).sum(dim=1).tolist() == [8, 8, 8]


def test_rt1_zeroes_masked_pixels_and_keeps_the_rest():
    x = _images() * 0.9 + 0.05  # strictly positive, so a zero can only come from the mask
    x_t, mask = build_transform("rt1", seed=0, grid=8, mask_rate=0.25)(x)
    removed = mask.expand_as(x).bool()
    assert torch.all(x_t[removed] == 0)
    assert torch.equal(x_t[~removed], x[~removed])


def test_rt2_zeroes_masked_pixels():
    x = _images() * 0.5 + 0.25
    x_t, mask = build_transform("rt2", seed=0, noise_std=0.1, grid=8, mask_rate=0.25)(x)
    removed = mask.expand_as(x).bool()
    assert torch.all(x_t[removed] == 0)
    # Unmasked pixels were noised, not copied.
    assert not torch.equal(x_t[~removed], x[~removed])


@pytest.mark.parametrize("name", ["rt1", "rt2"])
def test_fresh_mask_per_call_and_per_image(name):
    transform = build_transform(name, seed=0, grid=8, mask_rate=0.25)
    x = _images(n=2)
    _, first = transform(x)
    _, second = transform(x)
    assert not torch.equal(first, second), "two calls drew the same masks"
    assert not torch.equal(first[0], first[1]), "two images in one batch got the same mask"
    # Identical images in one batch still get different masks.
    _, same_images = transform(x[:1].repeat(2, 1, 1, 1))
    assert not torch.equal(same_images[0], same_images[1])


@pytest.mark.parametrize("name", ["rt1", "rt2"])
def test_reseed_repeats_the_draws(name):
    transform = build_transform(name, seed=7, grid=8, mask_rate=0.25)
    x = _images(n=3)
    draws = [transform(x) for _ in range(2)]
    transform.reseed(7)
    again = [transform(x) for _ in range(2)]
    for (x_a, m_a), (x_b, m_b) in zip(draws, again):
        assert torch.equal(m_a, m_b)
        assert torch.equal(x_a, x_b)
    transform.reseed(8)
    _other_x, other_mask = transform(x)
    assert not torch.equal(other_mask, draws[0][1])


@pytest.mark.parametrize("name", ["rt1", "rt2"])
def test_same_seed_two_instances_agree_without_touching_global_rng(name):
    x = _images(n=2)
    torch.manual_seed(0)
    x_a, m_a = build_transform(name, seed=5)(x)
    torch.manual_seed(123)  # the global RNG must not matter
    x_b, m_b = build_transform(name, seed=5)(x)
    assert torch.equal(m_a, m_b) and torch.equal(x_a, x_b)
    # ... and drawing does not advance the global RNG.
    torch.manual_seed(42)
    expected = torch.rand(3)
    torch.manual_seed(42)
    build_transform(name, seed=5)(x)
    assert torch.equal(torch.rand(3), expected)


def test_rt2_output_in_unit_interval_and_clips():
    x = _images(n=4)
    x_t, mask = build_transform("rt2", seed=0, noise_std=0.5, grid=8, mask_rate=0.25)(x)
    assert x_t.min() >= 0 and x_t.max() <= 1
    kept = x_t[~mask.expand_as(x).bool()]
    # Strong noise on [0, 1] images must hit both clip bounds among kept pixels.
    assert (kept == 0).any() and (kept == 1).any()


def test_rt2_noise_has_the_configured_std_on_unmasked_pixels():
    noise_std = 0.1
    x = torch.full((4, 3, 32, 32), 0.5)  # 5 sigma from either clip bound
    x_t, mask = build_transform("rt2", seed=0, noise_std=noise_std, grid=8, mask_rate=0.25)(x)
    residual = (x_t - x)[~mask.expand_as(x).bool()]
    assert residual.numel() == 4 * 3 * 32 * 32 * 3 // 4
    assert residual.std().item() == pytest.approx(noise_std, rel=0.05)
    assert residual.mean().abs().item() < 0.01


def test_gradient_flows_through_rt2():
    x = (torch.full((2, 3, 32, 32), 0.5) + 0.1 * _images(n=2)).requires_grad_(True)
    weights = _images(n=2, seed=1)
    x_t, mask = NoiseMaskTransform(noise_std=0.05, grid=8, mask_rate=0.25, seed=0)(x)
    (x_t * weights).sum().backward()
    grad = x.grad
    assert grad is not None and torch.isfinite(grad).all()
    removed = mask.expand_as(x).bool()
    assert grad.abs().sum() > 0
    assert torch.all(grad[removed] == 0)
    # Unclipped kept pixels pass the gradient straight through.
    assert torch.allclose(grad[~removed], weights[~removed])


def test_unknown_transform_name_raises_key_error_listing_known():
    with pytest.raises(KeyError) as info:
        build_transform("rt9")
    message = str(info.value)
    assert "rt9" in message
    for known in TRANSFORMS.names():
        assert known in message
    assert set(TRANSFORMS.names()) == {"rt1", "rt2", "rt3"}


# --------------------------------------------------------------------------- RT3


def test_rt3_partition_is_disjoint_covers_the_image_and_deals_equal_groups():
    from atop.transforms import partition_masks

    masks = partition_masks(5, 32, 32, grid=8, parts=4, generator=torch.Generator().manual_seed(0), device="cpu")
    assert masks.shape == (4, 5, 1, 32, 32)
    assert torch.equal(masks.sum(dim=0), torch.ones(5, 1, 32, 32))  # disjoint and covering
    for part in masks:
        blocks = _blocks(part, 8)
        assert torch.all(blocks.amin(dim=-1) == blocks.amax(dim=-1))  # whole blocks
        assert blocks[..., 0].flatten(1).sum(dim=1).tolist() == [16] * 5  # 25 % each
    assert not torch.equal(masks[:, 0], masks[:, 1])  # a fresh partition per image
    uneven = partition_masks(2, 12, 12, grid=3, parts=4, generator=torch.Generator().manual_seed(0), device="cpu")
    assert sorted(_blocks(uneven[:, 0], 3)[..., 0].flatten(1).sum(dim=1).tolist()) == [2, 2, 2, 3]
    with pytest.raises(ValueError, match="cannot split 4 blocks into 5"):
        partition_masks(1, 8, 8, grid=2, parts=5, generator=torch.Generator(), device="cpu")


def test_rt3_training_pair_is_noise_then_one_of_its_masks():
    transform = build_transform("rt3", seed=0, noise_std=0.1, grid=8, copies=4)
    x = _images() * 0.5 + 0.25
    x_t, mask = transform(x)
    assert torch.equal(mask.mean(dim=(1, 2, 3)), torch.full((4,), 0.25))
    removed = mask.expand_as(x).bool()
    assert torch.all(x_t[removed] == 0) and not torch.equal(x_t[~removed], x[~removed])


def test_rt3_purify_is_fresh_per_call_and_repeats_after_reseed():
    transform = build_transform("rt3", seed=5, grid=8, copies=4)
    x = _images(n=2)
    masks = []

    def echo_mask(x_t, mask):  # an "inpainter" that shows which copy masked what
        masks.append(mask)
        return x_t + mask

    first = transform.purify(echo_mask, x)
    transform.purify(echo_mask, x)
    assert not torch.equal(masks[0], masks[1])
    transform.reseed(5)
    transform.purify(echo_mask, x)
    assert torch.equal(masks[2], masks[0])
    # Each pixel came from the copy that masked it: x_t is 0 there, the mask 1.
    assert torch.equal(first, torch.ones_like(first))
