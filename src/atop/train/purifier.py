"""Purifier pre-training (generative, on RT-transformed clean images) and AToP fine-tuning.

Both stages run the same GAN step: discriminator hinge loss, generator loss =
adversarial term + L1 to the reconstruction target (summed over the generator's
``forward_train`` outputs: DeepFill's coarse and refined images), the target also
being the discriminator's real image. A purifier without a discriminator (the
autoencoder) gets the L1 term only. Pre-training reconstructs clean images.
Fine-tuning (with an overfitting monitor, monitor.py) feeds adversarial examples x' instead and adds
``ce_weight * CE(f(g(t(x'))), y)`` with the classifier f frozen; its target is x'
itself (``recon_target: adversarial``, the paper's L_df(x') and the public code)
or the clean image (``clean``).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ConfigError
from ..data import PreparedData
from ..errors import FineTuneCollapse
from ..fastpath import FastPath
from ..models import PurifierParts, build_purifier
from ..models.purifiers import load_initial_weights
from ..registry import Registry
from ..transforms import RandomTransform, build_transform
from .loop import batches, epoch_seed, fit

if TYPE_CHECKING:
    from ..defense import DefendedModel

log = logging.getLogger("atop.train")

InputFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
ExtraLossFn = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, dict[str, float]]]
TargetFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

# What the generator reconstructs, from (clean batch, generator input before RT).
RECON_TARGETS: Registry[TargetFn] = Registry("fine-tuning reconstruction target")
RECON_TARGETS.register("adversarial")(lambda clean, attacked: attacked)
RECON_TARGETS.register("clean")(lambda clean, attacked: clean)

# Fine-tuning keys added after the first recipe, with the values a spec without them means.
FINETUNE_DEFAULTS = {"recon_target": "adversarial", "epoch_images": None}
# Settings that do not change the trained weights, so a resume file may differ in them.
NOT_TRAINING = ("max_clean_drop", "check_draws", "monitor")


def make_optimizers(parts: PurifierParts, spec: dict) -> dict[str, torch.optim.Optimizer]:
    betas = tuple(spec["betas"])
    optimizers = {"generator": torch.optim.Adam(parts.generator.parameters(), lr=spec["lr"], betas=betas)}
    if parts.discriminator is not None:
        optimizers["discriminator"] = torch.optim.Adam(parts.discriminator.parameters(), lr=spec["lr"], betas=betas)
    return optimizers


def gan_epoch(
    parts: PurifierParts,
    transform: RandomTransform,
    optimizers: dict[str, torch.optim.Optimizer],
    x: torch.Tensor,
    y: torch.Tensor,
    spec: dict,
    seed: int,
    epoch: int,
    device: torch.device,
    make_input: InputFn | None = None,
    extra_loss: ExtraLossFn | None = None,
    fast: FastPath = FastPath(),
    recon_target: TargetFn = RECON_TARGETS["clean"],
) -> dict[str, float]:
    """One epoch: ``spec["epoch_images"]`` images of a fresh permutation (default: all of ``x``)."""
    generator, discriminator = parts.generator, parts.discriminator
    generate = fast.compiled(generator.forward_train)
    score = fast.runner(discriminator) if discriminator is not None else None
    generator.train()
    transform.reseed(epoch_seed(seed, epoch, stream=1))
    torch.manual_seed(epoch_seed(seed, epoch, stream=2))  # torchattacks' random starts use the global RNG
    order = torch.Generator().manual_seed(epoch_seed(seed, epoch))
    sums: dict[str, float] = {}
    seen = 0
    for xb, yb in batches(x, y, spec["batch_size"], order, spec.get("epoch_images")):
        xb, yb = fast.inputs(xb.to(device)), yb.to(device)
        with fast.mixed_precision(device):
            x_in = make_input(xb, yb) if make_input else xb
        generator.train()  # an attack through the generator (torchattacks) leaves it in eval mode
        target = recon_target(xb, x_in)
        x_t, mask = transform(x_in)
        with fast.mixed_precision(device):  # DeepFill: coarse and refined outputs; L1 applies to each
            outputs = [out.float() for out in generate(x_t, mask)]
        fake = outputs[-1]
        metrics: dict[str, float] = {}
        if discriminator is not None:
            discriminator.train()
            with fast.mixed_precision(device):
                real_score, fake_score = score(target, mask).float(), score(fake.detach(), mask).float()
            d_loss = F.relu(1 - real_score).mean() + F.relu(1 + fake_score).mean()
            optimizers["discriminator"].zero_grad(set_to_none=True)
            d_loss.backward()
            optimizers["discriminator"].step()
            with fast.mixed_precision(device):
                adv = -score(fake, mask).float().mean()
            metrics |= {"d_loss": d_loss.item(), "g_adv": adv.item()}
        else:
            adv = fake.new_zeros(())
        l1 = sum((out - target).abs().mean() for out in outputs)
        g_loss = spec["adv_weight"] * adv + spec["l1_weight"] * l1
        metrics["l1"] = l1.item()
        if extra_loss is not None:
            with fast.mixed_precision(device):
                extra, extra_metrics = extra_loss(fake, yb)
            g_loss = g_loss + extra
            metrics |= extra_metrics
        optimizers["generator"].zero_grad(set_to_none=True)
        g_loss.backward()
        optimizers["generator"].step()
        metrics["g_loss"] = g_loss.item()
        for name, value in metrics.items():
            sums[name] = sums.get(name, 0.0) + value * len(yb)
        seen += len(yb)
    generator.eval()
    return {name: total / seen for name, total in sums.items()}


@torch.no_grad()
def reconstruction_l1(
    generator: nn.Module, transform: RandomTransform, x: torch.Tensor, device, batch_size: int = 256
) -> float:
    generator.eval()
    total = 0.0
    for start in range(0, len(x), batch_size):
        xb = x[start : start + batch_size].to(device)
        total += (generator(*transform(xb)) - xb).abs().mean().item() * len(xb)
    return total / len(x)


def pretrain_purifier(
    data: PreparedData, spec: dict, seed: int, device: torch.device, resume_path, fast: FastPath = FastPath()
):
    """Generative pre-training on RT-transformed clean training images."""
    torch.manual_seed(seed)
    model_meta = {
        "arch": spec["arch"],
        "in_channels": data.info["image_shape"][0],
        "image_size": spec.get("image_size"),
        **spec["arch_params"],
    }
    transform_meta = {"name": spec["transform"], "params": spec["transform_params"]}
    parts = build_purifier(**model_meta)
    if spec.get("init_weights"):
        load_initial_weights(parts, spec["init_weights"]["path"], spec["init_weights"].get("sha256"))
        log.info("pretrain_purifier: initialised from %s", spec["init_weights"]["path"])
    modules = fast.prepare(parts.as_module().to(device))
    transform = build_transform(spec["transform"], seed=seed, **spec["transform_params"])
    optimizers = make_optimizers(parts, spec["pretrain"])
    x_train, y_train = data.images("train"), data.labels("train")
    x_val = data.images("val")
    val_transform = build_transform(spec["transform"], seed=seed + 1, **spec["transform_params"])

    def run_epoch(epoch: int) -> dict[str, float]:
        row = gan_epoch(
            parts, transform, optimizers, x_train, y_train, spec["pretrain"], seed, epoch, device, fast=fast
        )
        val_transform.reseed(seed + 1)
        row["val_l1"] = reconstruction_l1(parts.generator, val_transform, x_val, device)
        return row

    history = fit(
        stage="pretrain_purifier",
        modules={"purifier": modules},
        optimizers=optimizers,
        epochs=spec["pretrain"]["epochs"],
        run_epoch=run_epoch,
        resume_path=resume_path,
        fingerprint={"spec": spec, "seed": seed, "data": data.info},
    )
    return modules, model_meta, transform_meta, history


def state_digest(state: dict[str, torch.Tensor]) -> str:
    """sha256 of a state dict's names and raw tensor bytes (any dtype, any device)."""
    digest = hashlib.sha256()
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(state[name].detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def defended_val_accuracy(defense: DefendedModel, data: PreparedData, draws: int, seed: int) -> float:
    from ..metrics import correct_per_draw

    defense.eval().reseed(seed)
    return correct_per_draw(defense, data.images("val"), data.labels("val"), draws, 256).float().mean().item()


def finetune_purifier(
    data: PreparedData,
    spec: dict,
    seed: int,
    device: torch.device,
    classifier: nn.Module,
    pretrained_state: dict,
    model_meta: dict,
    transform_meta: dict,
    resume_path,
    fast: FastPath = FastPath(),
):
    """AToP fine-tuning; raise :class:`FineTuneCollapse` if clean accuracy falls too far."""
    # Imported here, not above: pre-training runs none of them (src/atop/code_closure.py), so an
    # edit of the monitor, the defense or the fine-tuning attacks reruns fine-tuning only.
    from ..defense import DefendedModel
    from ..diagnostics.settings import monitor_settings
    from ..finetune_attacks import FINETUNE_ATTACKS
    from .monitor import OverfittingMonitor

    torch.manual_seed(seed)
    ft = {**FINETUNE_DEFAULTS, **spec["finetune"]}
    recon_target = RECON_TARGETS[ft["recon_target"]]
    n_train = len(data.labels("train"))
    if ft["epoch_images"] is not None and ft["epoch_images"] > n_train:
        raise ConfigError(
            f"finetune.epoch_images = {ft['epoch_images']} is more than the {n_train} training images; "
            f"lower it, or set it to null for epochs of the whole training split"
        )
    # Resume only onto the same starting weights, whatever their files are called.
    fingerprint = {
        "spec": {**spec, "finetune": {k: v for k, v in ft.items() if k not in NOT_TRAINING}},
        "seed": seed,
        "data": data.info,
        "model": model_meta,
        "classifier": state_digest(classifier.state_dict()),
        "pretrained_purifier": state_digest(pretrained_state),
    }
    parts = build_purifier(**model_meta)
    modules = parts.as_module().to(device)
    modules.load_state_dict(pretrained_state)
    fast.prepare(modules)
    classifier = fast.prepare(classifier.to(device).eval().requires_grad_(False))
    transform = build_transform(transform_meta["name"], seed=seed, **transform_meta["params"])
    defense = DefendedModel(classifier, parts.generator, transform)
    attack = FINETUNE_ATTACKS[ft["attack"]].build(classifier, defense, ft)
    optimizers = make_optimizers(parts, ft)
    check_seed = seed + 2
    # Clean / FGSM / EOT-PGD accuracy of the whole defense on fixed batches (monitor.py).
    monitor = OverfittingMonitor(
        (data.images("train"), data.labels("train")),
        (data.images("val"), data.labels("val")),
        ft["eps"],
        monitor_settings(ft.get("monitor"), "finetune.monitor"),
    )
    before = defended_val_accuracy(defense, data, ft["check_draws"], check_seed)
    log.info("finetune_purifier: pre-trained defense, val clean accuracy %.4f", before)

    def run_epoch(epoch: int) -> dict[str, float]:
        ce_on = epoch >= ft["ce_start_epoch"]

        def adversarial(xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
            return attack(xb, yb).detach()

        def classification_loss(fake: torch.Tensor, yb: torch.Tensor):
            ce = F.cross_entropy(classifier(fake), yb)
            return (ft["ce_weight"] * ce if ce_on else ce.detach() * 0), {"ce": ce.item()}

        row = gan_epoch(
            parts,
            transform,
            optimizers,
            data.images("train"),
            data.labels("train"),
            ft,
            seed,
            epoch,
            device,
            make_input=adversarial,
            extra_loss=classification_loss,
            fast=fast,
            recon_target=recon_target,
        )
        row["val_clean_accuracy"] = defended_val_accuracy(defense, data, 1, check_seed)
        return row | monitor(defense)

    history = fit(
        stage="finetune_purifier",
        modules={"purifier": modules},
        optimizers=optimizers,
        epochs=ft["epochs"],
        run_epoch=run_epoch,
        resume_path=resume_path,
        fingerprint=fingerprint,
    )
    after = defended_val_accuracy(defense, data, ft["check_draws"], check_seed)
    check = {
        "pretrained_val_clean_accuracy": before,
        "finetuned_val_clean_accuracy": after,
        "drop": before - after,
        "max_clean_drop": ft["max_clean_drop"],
        "draws": ft["check_draws"],
    }
    log.info("finetune_purifier: fine-tuned defense, val clean accuracy %.4f (was %.4f)", after, before)
    if before - after > ft["max_clean_drop"]:
        raise FineTuneCollapse(
            f"fine-tuning collapsed: defended clean accuracy on the validation split fell from "
            f"{before:.3f} to {after:.3f} (drop {before - after:.3f} > finetune.max_clean_drop "
            f"{ft['max_clean_drop']}); the fine-tuned purifier is not published. Lower finetune.lr or "
            f"finetune.ce_weight, or raise finetune.max_clean_drop if this drop is expected."
        )
    return modules, history, check
