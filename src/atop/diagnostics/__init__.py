"""Diagnostics of every defense of an experiment, beside the accuracies.

- ``catalog``: the per-defense diagnostics as data (one entry each), which the workflow expands;
- ``distortion``: decision-boundary distortion along the FGSM direction;
- ``detectors``: the overfitting detectors reading the training monitors' curves;
- ``rng``: borrowed random states and module modes, handed back;
- ``concentration``: how aligned the input gradients of a randomized defense's draws
  are (GradDiv's mean resultant length), and how many EOT draws an attack needs;
- ``measures``: robust-generalization measures (gap, margin, input-gradient norm,
  KL, weight-space flatness of the classifier and of the purifier);
- ``pictures``: a few fixed test images through each defense, clean and attacked;
- ``summary``: the table and figures across defenses, and the EOT-sufficiency checks;
- ``settings``: the ``diagnostics:`` config section, checked torch-free (the Snakefile reads it).

Kept light on purpose: importing the package imports no torch.
"""
