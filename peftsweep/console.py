"""The console of an entry point (the command line, the benchmarks, the tests): peftsweep's own lines, as plain text
on stdout, a warning marked `warning: `. The library only logs (`logging.getLogger(__name__)` under `peftsweep`);
what other libraries say is quieted by `peftsweep.environment`."""

from __future__ import annotations

import logging
import sys


class ConsoleHandler(logging.Handler):
    """One line per record on the stdout of the moment (a test's captured stdout included), flushed at once: a
    sweep's progress is read while it runs."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            prefix = "warning: " if record.levelno >= logging.WARNING else ""
            sys.stdout.write(prefix + self.format(record) + "\n")
            sys.stdout.flush()
        except Exception:
            self.handleError(record)


def install(level: int = logging.INFO) -> None:
    """peftsweep's records at `level` and above go to the console, once, and not on to the root logger's handlers."""
    logger = logging.getLogger("peftsweep")
    if not any(isinstance(h, ConsoleHandler) for h in logger.handlers):
        logger.addHandler(ConsoleHandler())
    logger.setLevel(level)
    logger.propagate = False
