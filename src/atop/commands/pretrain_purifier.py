"""``python -m atop pretrain-purifier``."""

from __future__ import annotations

from ._training import add_training_arguments, checkpoint_meta, publish, start

HELP = "pre-train the purifier on RT-transformed clean images"


def add_arguments(parser) -> None:
    add_training_arguments(parser)


def run(args) -> None:
    from ..train.purifier import pretrain_purifier

    device, data, resume, fast = start(args)
    modules, model_meta, transform_meta, history = pretrain_purifier(
        data, args.spec["purifier"], args.spec["seed"], device, resume, fast
    )
    meta = checkpoint_meta(
        "purifier",
        "pretrained",
        args.spec,
        device,
        {"data": args.data},
        model=model_meta,
        transform=transform_meta,
        variant=args.spec.get("variant"),
        performance=fast.record(),
    )
    publish(args, modules, meta, history, resume)
