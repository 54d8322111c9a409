"""Purifier registry: generative models that restore an RT-transformed image.

A generator takes ``(x_t, mask)`` - the transformed image in [0, 1] and the
binary mask (1 = pixel removed) - and returns a clean image in [0, 1]: the
whole image, not just the masked pixels, since RT2 / RT3 also noise the kept
ones. ``forward_train`` returns every output the L1 loss applies to (DeepFill:
coarse and refined), the last being what ``forward`` returns. A discriminator,
where the purifier has one, scores (image, mask) patches.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from ..io import CheckpointError, load_external_state_dict
from ..registry import Registry

PURIFIERS: Registry = Registry("purifier")


@dataclass
class PurifierParts:
    generator: nn.Module
    discriminator: nn.Module | None

    def as_module(self) -> nn.ModuleDict:
        """Generator and discriminator as one module, so one state dict holds both."""
        modules = {"generator": self.generator}
        if self.discriminator is not None:
            modules["discriminator"] = self.discriminator
        return nn.ModuleDict(modules)


def _conv(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation), nn.ELU(inplace=True)
    )


class Purifier(nn.Module):
    """Base of every generator: one output unless a subclass has intermediate ones."""

    def forward_train(self, x_t: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
        return [self(x_t, mask)]


class InpaintingUNet(Purifier):
    """Small inpainting generator: U-Net with a dilated bottleneck for context.

    Input channels follow DeepFill: the transformed RGB image, a ones channel
    (lets the first convolution find image borders) and the mask.
    """

    def __init__(self, base_channels: int = 16, in_channels: int = 3) -> None:
        super().__init__()
        c = base_channels
        self.enc1 = _conv(in_channels + 2, c)
        self.enc2 = _conv(c, 2 * c, stride=2)
        self.enc3 = _conv(2 * c, 4 * c, stride=2)
        self.context = nn.Sequential(
            _conv(4 * c, 4 * c, dilation=2), _conv(4 * c, 4 * c, dilation=4), _conv(4 * c, 4 * c)
        )
        self.up2 = nn.Upsample(scale_factor=2, mode="nearest")
        self.dec2 = _conv(4 * c + 2 * c, 2 * c)
        self.dec1 = _conv(2 * c + c, c)
        self.out = nn.Conv2d(c, in_channels, 3, padding=1)

    def forward(self, x_t: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        ones = torch.ones_like(mask)
        e1 = self.enc1(torch.cat([x_t, ones, mask], dim=1))
        e2 = self.enc2(e1)
        h = self.context(self.enc3(e2))
        h = self.dec2(torch.cat([self.up2(h), e2], dim=1))
        h = self.dec1(torch.cat([self.up2(h), e1], dim=1))
        return torch.sigmoid(self.out(h))


class PatchDiscriminator(nn.Module):
    """Spectral-normalised conv stack scoring overlapping patches (SN-PatchGAN style)."""

    def __init__(self, base_channels: int = 16, in_channels: int = 3) -> None:
        super().__init__()
        c = base_channels
        layers: list[nn.Module] = []
        widths = [in_channels + 1, c, 2 * c, 4 * c]
        for cin, cout in zip(widths[:-1], widths[1:]):
            layers += [spectral_norm(nn.Conv2d(cin, cout, 4, stride=2, padding=1)), nn.LeakyReLU(0.2, inplace=True)]
        layers.append(spectral_norm(nn.Conv2d(4 * c, 1, 3, padding=1)))
        self.net = nn.Sequential(*layers)

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([image, mask], dim=1))


@PURIFIERS.register("gan_unet")
def gan_unet(base_channels: int = 16, in_channels: int = 3) -> PurifierParts:
    return PurifierParts(
        generator=InpaintingUNet(base_channels, in_channels),
        discriminator=PatchDiscriminator(base_channels, in_channels),
    )




# --------------------------------------------------------------------------- DeepFill v2


class GatedConv(nn.Module):
    """DeepFill v2's gated convolution: ``act(features) * sigmoid(gate)``, both from one conv."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, dilation: int = 1, activation: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(cin, 2 * cout, kernel, stride=stride, padding=dilation * (kernel - 1) // 2, dilation=dilation)
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features, gate = self.conv(x).chunk(2, dim=1)
        if self.activation:
            features = F.elu(features)
        return features * torch.sigmoid(gate)


class GatedDeconv(nn.Module):
    """Nearest x2 upsampling then a gated 3x3 convolution."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = GatedConv(cin, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


def _dilated(c: int) -> list[nn.Module]:
    return [GatedConv(c, c, dilation=d) for d in (2, 4, 8, 16)]


def _patches(x: torch.Tensor, kernel: int, stride: int, padding: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, L, C, k, k): every k x k patch of ``x`` as a convolution kernel."""
    b, c = x.shape[:2]
    cols = F.unfold(x, kernel, padding=padding, stride=stride)  # (B, C*k*k, L)
    return cols.transpose(1, 2).reshape(b, -1, c, kernel, kernel)


class ContextualAttention(nn.Module):
    """DeepFill's contextual attention: fill the hole from matching background patches.

    Foreground features are compared (cosine similarity, by convolution with the
    normalised 3x3 background patches at 1/``rate`` resolution) with every
    background patch that lies wholly outside the hole; a softmax over patches
    gives attention scores, and a transposed convolution with the full-resolution
    2*rate patches pastes the weighted background back. One grouped convolution
    handles the whole batch.
    """

    def __init__(self, rate: int = 2, softmax_scale: float = 10.0) -> None:
        super().__init__()
        self.rate = rate
        self.softmax_scale = softmax_scale

    def forward(self, foreground: torch.Tensor, background: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, c, h, w = background.shape
        r = self.rate
        # Pasted patches: 2r x 2r at stride r (DeepFill), 3 x 3 at full resolution; each pixel gets overlap of them.
        kernel, padding = (3, 1) if r == 1 else (2 * r, r // 2)
        raw = _patches(background, kernel, stride=r, padding=padding)  # (B, L, C, k, k)
        f = F.interpolate(foreground, scale_factor=1 / r, mode="nearest")
        bg = F.interpolate(background, scale_factor=1 / r, mode="nearest")
        m = F.interpolate(mask, size=bg.shape[-2:], mode="nearest")
        hs, ws = f.shape[-2:]
        keys = _patches(bg, 3, stride=1, padding=1)  # (B, L, C, 3, 3), L = hs * ws
        keys = keys / keys.flatten(2).norm(dim=2).clamp_min(1e-4).view(b, -1, 1, 1, 1)
        # A background patch may be copied only if no pixel of it is in the hole.
        valid = (_patches(m, 3, stride=1, padding=1).flatten(2).amax(dim=2) == 0).float()  # (B, L)
        valid = valid.view(b, -1, 1, 1)
        scores = F.conv2d(f.reshape(1, b * c, hs, ws), keys.reshape(-1, c, 3, 3), padding=1, groups=b)
        scores = scores.view(b, -1, hs, ws) * valid
        attention = F.softmax(scores * self.softmax_scale, dim=1) * valid
        out = F.conv_transpose2d(
            attention.reshape(1, -1, hs, ws),
            raw.reshape(-1, c, kernel, kernel),
            stride=r,
            padding=padding,
            groups=b,
        )
        overlap = (kernel / r) ** 2
        return out.view(b, c, *out.shape[-2:])[..., :h, :w] / overlap


class DeepFillV2(Purifier):
    """DeepFill v2 generator (Yu et al. 2019): gated coarse network, then a refinement
    network with a dilated-convolution branch and a contextual-attention branch.

    Works at any size divisible by 4 * ``rate``. ``channels`` counts gated features: the official
    code's cnum = 48 convolution outputs split into 24 features and 24 gates, so 24 is its size.
    The last layer is a plain convolution, as there. Internally images are on DeepFill's [-1, 1]
    scale (tanh output); the interface stays [0, 1]. Not ported: the attention "fuse" step and the
    ReLU before attention, both minor.
    """

    def __init__(self, channels: int = 24, in_channels: int = 3, rate: int = 2, softmax_scale: float = 10.0):
        super().__init__()
        c = channels
        cin = in_channels + 2
        self.coarse = nn.Sequential(
            GatedConv(cin, c, 5), GatedConv(c, 2 * c, stride=2), GatedConv(2 * c, 2 * c),
            GatedConv(2 * c, 4 * c, stride=2), GatedConv(4 * c, 4 * c), GatedConv(4 * c, 4 * c),
            *_dilated(4 * c), GatedConv(4 * c, 4 * c), GatedConv(4 * c, 4 * c),
            GatedDeconv(4 * c, 2 * c), GatedConv(2 * c, 2 * c), GatedDeconv(2 * c, c),
            GatedConv(c, c // 2), nn.Conv2d(c // 2, in_channels, 3, padding=1),
        )
        self.refine_conv = nn.Sequential(
            GatedConv(cin, c, 5), GatedConv(c, c, stride=2), GatedConv(c, 2 * c),
            GatedConv(2 * c, 2 * c, stride=2), GatedConv(2 * c, 4 * c), GatedConv(4 * c, 4 * c),
            *_dilated(4 * c),
        )
        self.refine_attention_in = nn.Sequential(
            GatedConv(cin, c, 5), GatedConv(c, c, stride=2), GatedConv(c, 2 * c),
            GatedConv(2 * c, 4 * c, stride=2), GatedConv(4 * c, 4 * c), GatedConv(4 * c, 4 * c),
        )
        self.attention = ContextualAttention(rate, softmax_scale)
        self.refine_attention_out = nn.Sequential(GatedConv(4 * c, 4 * c), GatedConv(4 * c, 4 * c))
        self.refine_out = nn.Sequential(
            GatedConv(8 * c, 4 * c), GatedConv(4 * c, 4 * c), GatedDeconv(4 * c, 2 * c), GatedConv(2 * c, 2 * c),
            GatedDeconv(2 * c, c), GatedConv(c, c // 2), nn.Conv2d(c // 2, in_channels, 3, padding=1),
        )
        self.multiple = 4 * rate

    def _stages(self, x_t: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h, w = x_t.shape[-2:]
        if h % self.multiple or w % self.multiple:
            raise ValueError(f"DeepFillV2 needs sides divisible by {self.multiple}, got {h}x{w} (set purifier.image_size)")
        ones = torch.ones_like(mask)
        x = (2 * x_t - 1) * (1 - mask)
        coarse = torch.tanh(self.coarse(torch.cat([x, ones, mask], dim=1)))
        # The refinement network sees the known pixels and the coarse guess in the hole.
        composed = torch.cat([coarse * mask + x * (1 - mask), ones, mask], dim=1)
        features = self.refine_attention_in(composed)
        feature_mask = F.interpolate(mask, size=features.shape[-2:], mode="nearest")
        attended = self.refine_attention_out(self.attention(features, features, feature_mask))
        refined = torch.tanh(self.refine_out(torch.cat([self.refine_conv(composed), attended], dim=1)))
        return (coarse + 1) / 2, (refined + 1) / 2

    def forward_train(self, x_t: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
        return list(self._stages(x_t, mask))

    def forward(self, x_t: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self._stages(x_t, mask)[1]


class SNPatchGAN(nn.Module):
    """SN-PatchGAN discriminator: spectral-normalised 5x5 stride-2 convolutions.

    Every element of the last feature map (all its channels) is a patch score the hinge loss applies to.
    """

    def __init__(self, channels: int = 64, in_channels: int = 3, layers: int = 6) -> None:
        super().__init__()
        widths = [in_channels + 1] + [min(channels * 2**i, 4 * channels) for i in range(layers)]
        modules: list[nn.Module] = []
        for cin, cout in zip(widths[:-1], widths[1:]):
            # Leaky ReLU after every layer, the last included, as in the official code.
            modules += [spectral_norm(nn.Conv2d(cin, cout, 5, stride=2, padding=2)), nn.LeakyReLU(0.2, inplace=True)]
        self.net = nn.Sequential(*modules)

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([image, mask], dim=1))


@PURIFIERS.register("deepfill_v2")
def deepfill_v2(
    channels: int = 24,
    discriminator_channels: int = 64,
    discriminator_layers: int = 6,
    rate: int = 2,
    softmax_scale: float = 10.0,
    in_channels: int = 3,
) -> PurifierParts:
    return PurifierParts(
        generator=DeepFillV2(channels, in_channels, rate, softmax_scale),
        discriminator=SNPatchGAN(discriminator_channels, in_channels, discriminator_layers),
    )


# --------------------------------------------------------------------------- autoencoder


class InpaintingAutoencoder(Purifier):
    """Encoder-decoder without skip connections: every pixel passes the bottleneck."""

    def __init__(self, base_channels: int = 32, in_channels: int = 3, depth: int = 3) -> None:
        super().__init__()
        widths = [base_channels * 2**i for i in range(depth + 1)]
        encoder: list[nn.Module] = [_conv(in_channels + 2, widths[0])]
        for cin, cout in zip(widths[:-1], widths[1:]):
            encoder.append(_conv(cin, cout, stride=2))
        decoder: list[nn.Module] = []
        for cin, cout in zip(widths[:0:-1], widths[-2::-1]):
            decoder += [nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1), nn.ELU(inplace=True)]
        self.encoder = nn.Sequential(*encoder)
        self.decoder = nn.Sequential(*decoder, nn.Conv2d(widths[0], in_channels, 3, padding=1))
        self.multiple = 2**depth

    def forward(self, x_t: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h, w = x_t.shape[-2:]
        if h % self.multiple or w % self.multiple:
            raise ValueError(f"the autoencoder needs sides divisible by {self.multiple}, got {h}x{w}")
        code = self.encoder(torch.cat([x_t, torch.ones_like(mask), mask], dim=1))
        return torch.sigmoid(self.decoder(code))


@PURIFIERS.register("ae")
def autoencoder(base_channels: int = 32, depth: int = 3, in_channels: int = 3) -> PurifierParts:
    """Trained with the reconstruction (L1) loss only: no discriminator."""
    return PurifierParts(generator=InpaintingAutoencoder(base_channels, in_channels, depth), discriminator=None)


# --------------------------------------------------------------------------- resolution and weights


class ResizedPurifier(Purifier):
    """Run ``inner`` at ``image_size`` x ``image_size`` and return images at the input's resolution."""

    def __init__(self, inner: Purifier, image_size: int) -> None:
        super().__init__()
        self.inner = inner
        self.image_size = image_size

    def forward_train(self, x_t: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
        size = x_t.shape[-2:]
        side = (self.image_size, self.image_size)
        inputs = F.interpolate(x_t, size=side, mode="bilinear", align_corners=False, antialias=True)
        outputs = self.inner.forward_train(inputs.clamp(0, 1), F.interpolate(mask, size=side, mode="nearest"))
        return [
            F.interpolate(out, size=size, mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)
            for out in outputs
        ]

    def forward(self, x_t: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.forward_train(x_t, mask)[-1]


class ResizedDiscriminator(nn.Module):
    """Score (image, mask) at ``image_size`` x ``image_size``, the resolution its generator works at."""

    def __init__(self, inner: nn.Module, image_size: int) -> None:
        super().__init__()
        self.inner = inner
        self.image_size = image_size

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        side = (self.image_size, self.image_size)
        image = F.interpolate(image, size=side, mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)
        return self.inner(image, F.interpolate(mask, size=side, mode="nearest"))


def build_purifier(arch: str, image_size: int | None = None, **kwargs) -> PurifierParts:
    """The registry's purifier; with ``image_size`` its generator and discriminator run at that resolution."""
    parts = PURIFIERS[arch](**kwargs)
    if image_size is not None:
        parts.generator = ResizedPurifier(parts.generator, image_size)
        if parts.discriminator is not None:
            parts.discriminator = ResizedDiscriminator(parts.discriminator, image_size)
    return parts


def load_initial_weights(parts: PurifierParts, path: str | Path, sha256: str | None = None) -> None:
    """Initialise from a user-provided state dict: the generator's own, or ``generator.`` /
    ``discriminator.`` keys of a whole purifier. Loaded with ``weights_only=True``; every key must fit.
    """
    path = Path(path)
    state = load_external_state_dict(path, sha256, "purifier init weights")
    generator = parts.generator.inner if isinstance(parts.generator, ResizedPurifier) else parts.generator
    discriminator = parts.discriminator
    if isinstance(discriminator, ResizedDiscriminator):
        discriminator = discriminator.inner
    whole = any(key.startswith(("generator.", "discriminator.")) for key in state)
    targets = {"generator": generator, "discriminator": discriminator} if whole else {"generator": generator}
    for name, module in targets.items():
        own = {k.removeprefix(f"{name}."): v for k, v in state.items() if k.startswith(f"{name}.")} if whole else state
        if module is None:
            if own:
                raise CheckpointError(f"{path} has {name} weights, but this purifier has no {name}")
            continue
        try:
            module.load_state_dict(own)
        except RuntimeError as error:
            raise CheckpointError(f"{path} does not fit the purifier's {name}: {error}") from error
