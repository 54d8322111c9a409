"""AToP - Adversarial Training on Purification, as a reproducible workflow."""

__version__ = "0.1.0"
