"""Plumbing every package shares, and nothing about networks, latency or search.

``common.errors``       :class:`UserError`, the one exception that means "the input is wrong"
``common.atomic``       writes that never leave a half-written file (temp file, then rename)
``common.paths``        where runs write (``results/`` or ``$HWNAS_RESULTS``)
``common.cli_io``       argparse types with bounds, output-path checks, JSON output
``common.ray_cluster``  starting a local Ray or attaching to a cluster, the dashboard and its token
``common.interrupt``    Ctrl-C for long runs: the first stops cleanly, the second at once
``common.runstatus``    a run folder's ``status.json``: running, finished, interrupted, ... and by which process

It imports nothing from the other packages, so any of them may import it.
"""
