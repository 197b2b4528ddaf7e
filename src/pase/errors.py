"""Exceptions the command line reports specially; importable without torch (the CLI starts fast)."""

__all__ = ["RunInterrupted"]


class RunInterrupted(RuntimeError):
    """Training stopped on Ctrl-C (SIGINT) or SIGTERM; ``signal`` names which. The last finished
    epoch's checkpoint is kept and ``pase train --resume DIR`` continues from it."""

    def __init__(self, message: str, signal: str) -> None:
        super().__init__(message)
        self.signal = signal
