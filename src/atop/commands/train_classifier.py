"""``python -m atop train-classifier``."""

from __future__ import annotations

from ._training import add_training_arguments, checkpoint_meta, publish, start

HELP = "train the classifier normally (or load a provided one)"


def add_arguments(parser) -> None:
    add_training_arguments(parser)


def run(args) -> None:
    from ..train.classifier import train_classifier

    device, data, resume, fast = start(args)
    spec = args.spec["classifier"]
    inputs = {"data": args.data}
    if spec.get("pretrained"):
        # A user-provided RobustBench checkpoint replaces training.
        from ..models.classifiers import load_robustbench_classifier

        provided = spec["pretrained"]
        model, model_meta = load_robustbench_classifier(
            provided["path"], provided["sha256"], spec["arch"], data.num_classes, data.info["image_shape"][-1]
        )
        stage, history, inputs["pretrained"] = "provided", [], provided["path"]
    else:
        model, model_meta, history = train_classifier(data, spec, args.spec["seed"], device, resume, fast)
        stage = "trained"
    performance = {"performance": fast.record()} if stage == "trained" else {}
    meta = checkpoint_meta("classifier", stage, args.spec, device, inputs, model=model_meta, **performance)
    publish(args, model, meta, history, resume if stage == "trained" else None)
