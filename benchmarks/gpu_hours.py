"""An ESTIMATE of the GPU hours a paper preset needs, from FLOPs (no GPU measured).

FLOPs per image are counted by torch's FlopCounterMode on the registry's own models
at the preset's resolution (one multiply-add = 2 FLOPs); a backward pass is taken as
2x its forward. Each stage's count is then: images x passes, for example
train_classifier = epochs x train images x 3 x F(classifier); train_adversarial adds its per-epoch
validation PGD; fine-tuning runs epochs x epoch_images images (default: the training split). Purifiers
count at their own image_size (generator and discriminator). Attack gradients per image:
Overfitting monitors: per epoch, train + val images x (1 + steps) gradients (x EOT through a defense)
+ 3 scoring forwards; distortion: per image and draw one gradient + (points + 1) forwards.
FGSM 1, PGD steps, EOT-PGD / BPDA steps x EOT (EOT 1 on deterministic defenses), CW and StAdv
steps (x EOT), AutoAttack-rand 2 x 100 x EOT, AutoAttack-standard APGD-CE 100 + APGD-T 9 x 100
+ FAB-T 9 x 100 + Square 5000 forwards (an upper bound: AutoAttack stops on broken images).
Seconds = FLOPs / (peak x utilisation).

    python benchmarks/gpu_hours.py config/paper/cifar10.yaml [--peak-tflops 495] [--utilisation 0.3]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import yaml
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from atop.attack_catalog import ATTACK_FACTS
from atop.config import attack_defenses, full_seeds, protocol_defenses, purifier_variant
from atop.defense_kinds import DEFENSES, split_defense
from atop.diagnostics.settings import DISTORTION_DEFAULTS, MONITOR_DEFAULTS
from atop.models import build_classifier, build_purifier
from atop.protocols import JOB_PROTOCOLS

TRAIN_IMAGES = {"cifar10": 50_000, "cifar100": 50_000, "imagenette": 9_469, "digits": 1_797}
CLASSES = {"cifar10": 10, "cifar100": 100, "imagenette": 10, "digits": 10}


def forward_flops(model, *inputs) -> float:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(*inputs)
    return float(counter.get_total_flops())


def attack_gradients(attack: dict, randomized: bool) -> float:
    """Gradient passes per image: each attack's ``cost`` in src/atop/attack_catalog.py."""
    eot = attack.get("eot", 1) if randomized else 1
    return ATTACK_FACTS[attack["method"]].cost(attack, eot)


def diagnostics_cost(config: dict, defense: str, attacks: dict, job, per_gradient: float) -> float:
    """Gradient concentration (2K gradients per image) and the diagnostics attack: train and test images, rerun
    per weight perturbation of each network (classifier, purifier), and the pictures."""
    diag = config.get("diagnostics", {})
    concentration, measures = diag.get("gradient_concentration", {}), diag.get("measures", {})
    randomized = DEFENSES[split_defense(defense)[0]].purifier_stage is not None
    gradients = 2 * concentration.get("reference_draws", 64) if randomized else 4
    networks = 2 if randomized else 1
    n = measures.get("n_images", 32)
    attacked = 2 * n + networks * n * (1 + measures.get("flatness_draws", 10))
    attacked += len(diag.get("pictures", {}).get("images", [0, 1, 2]))
    attack = attacks.get(diag.get("attack", "eot_pgd"))
    if attack is None:  # a config without the diagnostics' attack is refused by the workflow: nothing to count
        return 0.0
    return concentration.get("n_images", 32) * gradients * per_gradient + job(defense, attack, attacked)


def monitor_cost(section: dict | None, per_gradient: float, eot: int | None) -> float:
    """One epoch of an overfitting monitor: train + val images, each scored clean, after FGSM (1 gradient)
    and after PGD (steps gradients), every gradient EOT-averaged, each scoring one forward (a third of
    a gradient). ``eot`` None: the monitor's own (a randomized defense)."""
    monitor = {**MONITOR_DEFAULTS, **(section or {})}
    images = monitor["train_images"] + monitor["val_images"]
    gradients = (1 + monitor["steps"]) * (monitor["eot"] if eot is None else eot)
    return images * (gradients + 3 / 3) * per_gradient


def distortion_cost(config: dict, per_gradient: float) -> float:
    """Decision-boundary distortion of a fine-tuned defense: per image and draw one gradient and
    points + 1 forwards (a third of a gradient each)."""
    distortion = {**DISTORTION_DEFAULTS, **config.get("diagnostics", {}).get("distortion", {})}
    per_image = per_gradient * (1 + (distortion["points"] + 1) / 3)
    return distortion["n_images"] * distortion["draws"] * per_image


def estimate(config: dict) -> dict[str, float]:
    data = config["data"]
    size, n_train = data["image_size"], TRAIN_IMAGES[data["dataset"]] - data.get("val_size", 0)
    x = torch.rand(1, 3, size, size)
    classifier = build_classifier(
        config["classifier"]["arch"],
        CLASSES[data["dataset"]],
        [0.5] * 3,
        [0.25] * 3,
        size,
        **config["classifier"].get("arch_params", {}),
    ).eval()
    f_c = forward_flops(classifier, x)
    purifier_flops = {}
    for name, spec in config.get("purifiers", {}).items():
        parts = build_purifier(
            spec["arch"], in_channels=3, image_size=spec.get("image_size"), **spec.get("arch_params", {})
        )
        mask = torch.ones(1, 1, size, size)
        copies = spec.get("transform_params", {}).get("copies", 1) if spec["transform"] == "rt3" else 1
        f_g = copies * forward_flops(parts.generator.eval(), x, mask)
        f_d = forward_flops(parts.discriminator.eval(), x, mask) if parts.discriminator is not None else 0.0
        purifier_flops[name] = (f_g, f_d)

    cls, ft, ev = config["classifier"], config["finetune"], config["evaluation"]
    at = config.get("adversarial_training", {})
    flops = {"train_classifier": cls.get("epochs", 8) * n_train * 3 * f_c}
    defenses = ev["defenses"]
    if "at" in defenses:
        n_val = at.get("val_samples") or data.get("val_size", 200)
        validation = n_val * f_c * (3 * at.get("val_steps", 10) + 1)
        flops["train_adversarial"] = cls.get("epochs", 8) * (n_train * 3 * f_c * (at.get("steps", 10) + 1) + validation)
    variants = {purifier_variant(config, d) for d in defenses} - {None}
    finetuned = {purifier_variant(config, d) for d in defenses if split_defense(d)[0] == "atop"}
    flops["pretrain_purifier"] = sum(
        config["purifiers"][v]["pretrain"].get("epochs", 10)
        * n_train
        * (3 * purifier_flops[v][0] + 9 * purifier_flops[v][1])
        for v in variants
    )

    def finetune_step(variant: str) -> float:
        """One image's fine-tuning FLOPs: x' (FGSM on the classifier, or PGD through RT + purifier +
        classifier), then the GAN step and CE through the frozen classifier."""
        f_g, f_d = purifier_flops[variant]
        make_x = {
            "fgsm_classifier": 3 * f_c,
            "fgsm_checked": 3 * f_c + (ft.get("check_points", 3) - 1) * f_c,  # + a forward per interior point
            "pgd_defense": ft.get("steps", 10) * 3 * (f_g + f_c),
        }
        return make_x[ft.get("attack", "fgsm_classifier")] + 3 * f_g + 9 * f_d + 3 * f_c

    ft_images = ft.get("epochs", 6) * (ft.get("epoch_images") or n_train)
    flops["finetune_purifier"] = sum(ft_images * finetune_step(v) for v in finetuned)

    def job(defense: str, attack: dict, n: int) -> float:
        variant = purifier_variant(config, defense)
        randomized = DEFENSES[split_defense(defense)[0]].purifier_stage is not None
        f_g = purifier_flops[variant][0] if randomized else 0.0
        per_gradient = {"bpda_eot": f_g + 3 * f_c, "pgd_classifier": 3 * f_c, "cw_classifier": 3 * f_c}.get(
            attack["method"], 3 * (f_g + f_c)
        )
        draws = ev.get("draws", 4) if randomized else 1
        return n * (attack_gradients(attack, randomized) * per_gradient + 2 * draws * (f_g + f_c))

    attacks = ev["attacks"]
    flops["evaluate"] = sum(
        job(d, attacks[a], ev.get("n_samples", 200)) for a in attacks for d in attack_defenses(config, a)
    )
    flops["evaluate_sweep"] = sum(
        job(d, {**attacks[s["attack"]], s["param"]: value}, s.get("n_samples", ev.get("n_samples", 200)))
        for s in ev.get("sweeps", {}).values()
        for d in s.get("defenses", defenses)
        for value in s["values"]
        if s["param"] != "eps"
    ) + sum(
        len(s["values"]) * job(d, attacks[s["attack"]], s.get("n_samples", ev.get("n_samples", 200)))
        for s in ev.get("sweeps", {}).values()
        for d in s.get("defenses", defenses)
        if s["param"] == "eps"
    )

    # Scoring protocols' own jobs (src/atop/protocols.py): the deterministic white-box attacks one fixed
    # draw at EOT 1 and scores it once; the majority vote runs K copies per pass, EOT 1 on top; selective
    # EOT costs the evaluation's attack job on the protocols' images.
    protocols = ev.get("protocols") or {}
    if protocols:
        attack = attacks[protocols["attack"]]
        n = min(protocols.get("n_samples", ev.get("n_samples", 200)), ev.get("n_samples", 200))
        copies = protocols.get("majority_vote", {}).get("copies", 4)
        steps = attack_gradients({**attack, "eot": 1}, False)
        chosen = protocols.get("jobs", JOB_PROTOCOLS)

        def protocol_jobs(defense: str) -> float:
            variant = purifier_variant(config, defense)
            per_pass = (purifier_flops[variant][0] if variant else 0.0) + f_c
            cost = {
                "deterministic": n * (steps * 3 * per_pass + 2 * per_pass),
                "majority_vote": n * copies * (steps * 3 * per_pass + 2 * ev.get("draws", 4) * per_pass),
                "selective_eot": job(defense, attack, n),
            }
            return sum(cost[name] for name in chosen)

        flops["evaluate_protocols"] = sum(protocol_jobs(d) for d in protocol_defenses(config))

    def gradient(defense: str) -> float:  # one input gradient through the whole defense
        variant = purifier_variant(config, defense)
        return 3 * ((purifier_flops[variant][0] if variant else 0.0) + f_c)

    flops["diagnostics"] = sum(diagnostics_cost(config, d, attacks, job, gradient(d)) for d in defenses)
    flops["diagnostics"] += sum(distortion_cost(config, gradient(d)) for d in defenses if split_defense(d)[0] == "atop")
    # Overfitting monitors: every epoch of the AT baseline (on its classifier) and of each fine-tuning
    # (through RT + purifier + classifier, with the monitor's EOT).
    flops["overfitting_monitors"] = 0.0
    if "at" in defenses:
        flops["overfitting_monitors"] += cls.get("epochs", 8) * monitor_cost(at.get("monitor"), 3 * f_c, 1)
    for v in finetuned:
        flops["overfitting_monitors"] += ft.get("epochs", 6) * monitor_cost(
            ft.get("monitor"), 3 * (purifier_flops[v][0] + f_c), None
        )
    # every training seed repeats every job but the data preparation (the report is not counted)
    seeds = len(config.get("seeds", [0]))
    return {
        "per_image_gflops": {"classifier": f_c / 1e9, **{k: v[0] / 1e9 for k, v in purifier_flops.items()}},
        # the protocols' jobs run on the seeds that run everything (the first only, with replicates)
        "flops": {
            stage: (len(full_seeds(config)) if stage == "evaluate_protocols" else seeds) * value
            for stage, value in flops.items()
        },
        "seeds": seeds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("configs", nargs="+", type=Path)
    parser.add_argument(
        "--peak-tflops", type=float, default=495.0, help="H100 SXM dense TF32 (cuDNN convolutions' default)"
    )
    parser.add_argument("--utilisation", type=float, default=0.3)
    args = parser.parse_args()
    torch.set_num_threads(2)
    rate = args.peak_tflops * 1e12 * args.utilisation
    for path in args.configs:
        config = yaml.safe_load(path.read_text())
        result = estimate(config)
        seeds = f", {result['seeds']} training seeds" if result["seeds"] > 1 else ""
        print(f"{path}  (ESTIMATE at {args.peak_tflops:g} TFLOP/s x {args.utilisation:g} utilisation{seeds})")
        print("  forward GFLOPs per image:", ", ".join(f"{k} {v:.3g}" for k, v in result["per_image_gflops"].items()))
        total = 0.0
        for stage, flops in result["flops"].items():
            hours = flops / rate / 3600
            total += hours
            print(f"  {stage:<22} {flops:10.3e} FLOPs  {hours:8.2f} GPU h")
        print(f"  {'total':<22} {'':>16}  {total:8.2f} GPU h")


if __name__ == "__main__":
    main()
