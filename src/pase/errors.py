"""Exceptions the command line reports specially; importable without torch (the CLI starts fast)."""

__all__ = ["RunInterrupted"]


class RunInterrupted(KeyboardInterrupt):
    """Training stopped on Ctrl-C (SIGINT) or SIGTERM; ``signal`` names which. The last finished
    epoch's checkpoint is kept and ``pase train --resume DIR`` continues from it. A
    KeyboardInterrupt, so that ``except Exception`` (a comparison recording a failed run and going
    on) lets it through."""

    def __init__(self, message: str, signal: str = "SIGINT") -> None:
        super().__init__(message, signal)  # both in args: the exception pickles (pase compare --jobs N)
        self.signal = signal

    def __str__(self) -> str:
        return str(self.args[0])
