"""The GPU fast path (config performance.*) against the same code with it off, side by side.

CIFAR-shaped random tensors stand in for data (no data set travels to a GPU machine):
speed does not depend on pixel values. For WRN-28-10 + the paper's GAN purifier
(DeepFill v2, 24 channels, RT2) it times the package's own training and attack code:

- classifier training (``train_classifier``, one epoch): images/s;
- purifier fine-tuning (``finetune_purifier``: FGSM on the classifier, GAN step, CE): images/s;
- EOT-PGD evaluation (``BatchedEOTPGD`` through RT2 + purifier + classifier, EOT 20): images/s;

each with the fast path off (fp32, NCHW, eager) and on (channels_last, TF32, bf16 autocast
for training; channels_last + TF32 for evaluation, whose bf16 mode is opt-in), and the
fraction of the device's peak FLOP rate each reaches (FLOPs counted by torch's
FlopCounterMode; backward taken as 2x forward). ``--public`` adds the public AToP code's
setting (fine-tuning at batch 8 on 256x256 images: about 1.1 iterations/s recorded, GPU
unknown). ``--accuracy`` trains the default small CNN on the bundled digits with the
training fast path off and on and prints both validation accuracies.

    python benchmarks/gpu_fastpath.py                      # on a GPU machine
    python benchmarks/gpu_fastpath.py --smoke --device cpu # seconds: checks the script runs
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from atop.attacks import BatchedEOTPGD
from atop.data import PreparedData
from atop.defense import DefendedModel, fast_defense
from atop.fastpath import FastPath
from atop.models import build_classifier, build_purifier
from atop.train.classifier import train_classifier
from atop.train.purifier import finetune_purifier
from atop.transforms import build_transform

# Dense peak TFLOP/s by device name fragment and precision (NVIDIA data sheets, SXM parts).
PEAK_TFLOPS = {
    "H200": {"fp32": 67.0, "tf32": 494.7, "bf16-autocast": 989.4},
    "H100": {"fp32": 67.0, "tf32": 494.7, "bf16-autocast": 989.4},
    "A100": {"fp32": 19.5, "tf32": 156.0, "bf16-autocast": 312.0},
}
OFF = FastPath()
TRAIN_ON = FastPath(channels_last=True, tf32=True, autocast="bf16")
EVAL_ON = FastPath(channels_last=True, tf32=True)

SCALES = {  # (classifier, purifier, image size, train images, batch, eval images)
    "paper": (("wrn_28_10", {}), ("deepfill_v2", {"channels": 24}), 32, 4096, 128, 512),
    "smoke": (("small_cnn", {"width": 4}), ("gan_unet", {"base_channels": 4}), 16, 64, 16, 16),
}


def synthetic_data(n_train: int, size: int, seed: int = 0) -> PreparedData:
    g = torch.Generator().manual_seed(seed)
    tensors = {}
    for split, n in (("train", n_train), ("val", 256), ("test", 64)):
        tensors[f"x_{split}"] = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
        tensors[f"y_{split}"] = torch.randint(0, 10, (n,), generator=g)
    info = {
        "dataset": "synthetic",
        "num_classes": 10,
        "image_shape": [3, size, size],
        "mean": [0.49, 0.48, 0.45],
        "std": [0.25, 0.24, 0.26],
    }
    return PreparedData(tensors=tensors, info=info)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def train_flops_per_image(model, size: int, device) -> float:
    x = torch.rand(2, 3, size, size, device=device)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return 3 * counter.get_total_flops() / 2  # forward + backward (2x forward)


def peak(device: torch.device, precision: str) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for fragment, table in PEAK_TFLOPS.items():
        if fragment in name:
            return table[precision] * 1e12
    return None


def classifier_speed(data, spec, device, fast) -> float:
    with tempfile.TemporaryDirectory() as folder:
        fast.apply_backends()
        _, _, history = train_classifier(data, spec, 0, device, Path(folder) / "c.resume", fast)
    return len(data.labels("train")) / history[-1]["seconds"]


def finetune_speed(data, scale, device, fast, classifier, batch: int, image_size=None) -> float:
    (_, _), (arch, params), *_ = scale
    meta = {"arch": arch, "in_channels": 3, "image_size": image_size, **params}
    parts = build_purifier(**meta)
    spec = {
        "finetune": {
            "attack": "fgsm_classifier",
            "eps": 8 / 255,
            "epochs": 1,
            "batch_size": batch,
            "lr": 1e-4,
            "betas": [0.5, 0.999],
            "adv_weight": 0.1,
            "l1_weight": 1.0,
            "ce_weight": 0.05,
            "ce_start_epoch": 0,
            "max_clean_drop": 1.0,
            "check_draws": 1,
        }
    }
    transform = {"name": "rt2", "params": {"noise_std": 0.25, "grid": 8, "mask_rate": 0.25}}
    with tempfile.TemporaryDirectory() as folder:
        fast.apply_backends()
        _, history, _ = finetune_purifier(
            data,
            spec,
            0,
            device,
            classifier,
            parts.as_module().state_dict(),
            meta,
            transform,
            Path(folder) / "f.resume",
            fast,
        )
    return len(data.labels("train")) / history[-1]["seconds"]


def eot_speed(classifier, purifier_arch, size, n, device, fast, steps: int, eot: int) -> float:
    (arch, params) = purifier_arch
    generator = build_purifier(arch=arch, in_channels=3, **params).generator.to(device).eval().requires_grad_(False)
    transform = build_transform("rt2", seed=0, noise_std=0.25, grid=8, mask_rate=0.25)
    fast.apply_backends()
    defense = fast_defense(DefendedModel(classifier, generator, transform), fast, device)
    x = torch.rand(n, 3, size, size, device=device)
    y = torch.randint(0, 10, (n,), device=device)
    attack = BatchedEOTPGD(defense, eps=8 / 255, alpha=2 / 255, steps=1, eot_iter=eot)
    attack(x, y)  # warm-up: cuDNN autotuning, compilation
    synchronize(device)
    began = time.perf_counter()
    BatchedEOTPGD(defense, eps=8 / 255, alpha=2 / 255, steps=steps, eot_iter=eot)(x, y)
    synchronize(device)
    return n * steps / (time.perf_counter() - began)  # image-steps per second (each: EOT x fwd + bwd)


def digits_accuracy(device, fast, epochs: int) -> float:
    from atop.data import load_prepared, prepare_dataset

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "digits.pt"
        prepare_dataset(
            {"dataset": "digits", "image_size": 32, "val_size": 200, "test_size": 397, "split_seed": 0}, path
        )
        data = load_prepared(path)
        spec = {
            "arch": "small_cnn",
            "arch_params": {"width": 32},
            "epochs": epochs,
            "batch_size": 64,
            "lr": 1e-3,
            "weight_decay": 0.0,
        }
        fast.apply_backends()
        _, _, history = train_classifier(data, spec, 0, device, Path(folder) / "c.resume", fast)
    return history[-1]["val_accuracy"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--smoke", action="store_true", help="tiny models and sizes: check that the script runs")
    parser.add_argument("--steps", type=int, default=5, help="EOT-PGD steps timed")
    parser.add_argument("--eot", type=int, default=20)
    parser.add_argument("--public", action="store_true", help="also the public code's 256x256, batch-8 fine-tuning")
    parser.add_argument(
        "--accuracy",
        type=int,
        default=0,
        metavar="EPOCHS",
        help="train the digits CNN this many epochs with the fast path off and on",
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    device = torch.device(args.device)
    scale = SCALES["smoke" if args.smoke else "paper"]
    (c_arch, c_params), purifier_arch, size, n_train, batch, n_eval = scale
    data = synthetic_data(n_train, size)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(
        f"device: {name}  torch {torch.__version__}  {datetime.date.today()}  "
        f"classifier {c_arch}  purifier {purifier_arch[0]}  {size}x{size}"
    )
    classifier_spec = {
        "arch": c_arch,
        "arch_params": c_params,
        "epochs": 1,
        "batch_size": batch,
        "lr": 0.1,
        "optimizer": "sgd",
        "weight_decay": 5e-4,
    }
    meta = {
        "arch": c_arch,
        "num_classes": 10,
        "mean": data.info["mean"],
        "std": data.info["std"],
        "image_size": size,
        **c_params,
    }
    classifier = build_classifier(**meta).to(device).eval().requires_grad_(False)
    flops = train_flops_per_image(classifier, size, device)

    rows = []
    for label, fast_train, fast_eval in (("off", OFF, OFF), ("on", TRAIN_ON, EVAL_ON)):
        rows.append(
            {
                "fast path": label,
                "train_classifier img/s": classifier_speed(data, classifier_spec, device, fast_train),
                "finetune_purifier img/s": finetune_speed(data, scale, device, fast_train, classifier, batch),
                f"EOT-{args.eot} PGD img-steps/s": eot_speed(
                    classifier, purifier_arch, size, n_eval, device, fast_eval, args.steps, args.eot
                ),
                "train precision": fast_train.precision,
            }
        )
    columns = [k for k in rows[0] if k != "fast path"]
    print(f"\n{'fast path':<12}" + "".join(f"{c:>30}" for c in columns))
    for row in rows:
        print(
            f"{row['fast path']:<12}"
            + "".join(f"{row[c]:>30.1f}" if isinstance(row[c], float) else f"{row[c]:>30}" for c in columns)
        )
    speedups = {c: rows[1][c] / rows[0][c] for c in columns if isinstance(rows[0][c], float)}
    print(f"{'on / off':<12}" + "".join(f"{speedups[c]:>29.2f}x" for c in speedups))
    for row in rows:
        top = peak(device, row["train precision"])
        achieved = row["train_classifier img/s"] * flops
        share = f"{100 * achieved / top:.1f} % of the {row['train precision']} peak" if top else "peak unknown"
        print(f"classifier training, fast path {row['fast path']}: {achieved / 1e12:.2f} TFLOP/s ({share})")

    report = {
        "device": name,
        "torch": torch.__version__,
        "date": str(datetime.date.today()),
        "rows": rows,
        "speedups": speedups,
        "classifier_train_flops_per_image": flops,
    }
    if args.public:
        # The public code: DeepFill at 256x256 (resized in and out) behind the CIFAR classifier, batch 8.
        its = {
            label: finetune_speed(data, scale, device, fast, classifier, 8, image_size=256) / 8
            for label, fast in (("off", OFF), ("on", TRAIN_ON))
        }
        print(
            f"\npublic-code setting (256x256 purifier, batch 8): {its['off']:.2f} it/s fast path off, "
            f"{its['on']:.2f} it/s on; the public code recorded about 1.1 it/s (GPU unknown)"
        )
        report["public_setting_iterations_per_second"] = its
    if args.accuracy:
        accuracy = {
            label: digits_accuracy(device, fast, args.accuracy) for label, fast in (("off", OFF), ("on", TRAIN_ON))
        }
        print(
            f"\ndigits small CNN, {args.accuracy} epochs, validation accuracy: fast path off {accuracy['off']:.4f}, "
            f"on {accuracy['on']:.4f}"
        )
        report["digits_val_accuracy"] = accuracy
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
