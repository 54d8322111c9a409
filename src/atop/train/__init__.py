"""Training stages; all share :func:`atop.train.loop.fit`."""
