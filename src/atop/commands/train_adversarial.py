"""``python -m atop train-adversarial``: the paper's AT baseline."""

from __future__ import annotations

from ._training import add_training_arguments, checkpoint_meta, publish, start

HELP = "PGD adversarial training of the classifier (the AT baseline)"


def add_arguments(parser) -> None:
    add_training_arguments(parser)


def run(args) -> None:
    from ..train.adversarial import selected_epoch, train_adversarial

    device, data, resume, fast = start(args)
    model, model_meta, history = train_adversarial(
        data, args.spec["classifier"], args.spec["adversarial_training"], args.spec["seed"], device, resume, fast
    )
    meta = checkpoint_meta(
        "classifier",
        "adversarially_trained",
        args.spec,
        device,
        {"data": args.data},
        model=model_meta,
        performance=fast.record(),
        selected_epoch=selected_epoch(history),  # best validation robust accuracy (Rice et al. 2020)
    )
    publish(args, model, meta, history, resume)
