"""``python -m atop train-adversarial``: the paper's AT baseline."""

from __future__ import annotations

from ._common import fast_path, setup
from ._training import add_training_arguments, checkpoint_meta, resume_path, write_curve

HELP = "PGD adversarial training of the classifier (the AT baseline)"


def add_arguments(parser) -> None:
    add_training_arguments(parser)


def run(args) -> None:
    from ..data import load_prepared
    from ..io import save_checkpoint
    from ..train.adversarial import selected_epoch, train_adversarial

    device = setup(args.spec)
    data = load_prepared(args.data)
    resume = resume_path(args.out_checkpoint)
    fast = fast_path(args.spec, "training", device)
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
    save_checkpoint(args.out_checkpoint, model.state_dict(), meta)
    write_curve(args.out_curve, history)
    resume.unlink(missing_ok=True)
