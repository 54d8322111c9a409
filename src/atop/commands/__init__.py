"""One module per ``python -m atop <command>``: ``atop.commands.<command>`` (dashes as underscores).

Each command module declares ``HELP``, ``add_arguments(parser)`` and ``run(args)``; ``atop.cli``
lists the commands and imports only the one a job runs. Code shared by several commands sits
in the ``_``-prefixed modules; a command module never imports another command module, so an
edit of one command reruns its jobs only (code_closure.py).
"""
