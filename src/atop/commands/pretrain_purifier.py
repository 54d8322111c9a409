"""``python -m atop pretrain-purifier``."""

from __future__ import annotations

from ._common import fast_path, setup
from ._training import add_training_arguments, checkpoint_meta, resume_path, write_curve

HELP = "pre-train the purifier on RT-transformed clean images"


def add_arguments(parser) -> None:
    add_training_arguments(parser)


def run(args) -> None:
    from ..data import load_prepared
    from ..io import save_checkpoint
    from ..train.purifier import pretrain_purifier

    device = setup(args.spec)
    data = load_prepared(args.data)
    resume = resume_path(args.out_checkpoint)
    fast = fast_path(args.spec, "training", device)
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
    save_checkpoint(args.out_checkpoint, modules.state_dict(), meta)
    write_curve(args.out_curve, history)
    resume.unlink(missing_ok=True)
