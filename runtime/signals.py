"""SIGTERM/SIGINT as a flag the training loop checks between steps (the first one only: a second one kills)."""
from __future__ import annotations

import signal


class StopSignals:
    def __init__(self):
        self.received = None
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self.handle)

    def handle(self, signum, frame):
        self.received = signal.Signals(signum).name
        signal.signal(signum, signal.SIG_DFL)

    def exit_code(self) -> int:
        """128 + the signal number (SIGTERM's when the stop came from another rank's vote)."""
        return 128 + (signal.Signals[self.received].value if self.received else signal.SIGTERM.value)
