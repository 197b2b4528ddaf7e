"""Exceptions the command line reports specially; importable without torch (the CLI starts fast)."""

__all__ = ["RunInterrupted"]


class RunInterrupted(KeyboardInterrupt):
    """Training stopped on Ctrl-C (SIGINT) or SIGTERM; ``signal`` names which. The last finished
    epoch's checkpoint is kept and ``pase train --resume DIR`` continues from it. A
    KeyboardInterrupt, so that ``except Exception`` (a comparison recording a failed run and going
    on) lets it through."""

    def __init__(self, message: str, signal: str = "SIGINT", advice: str = "") -> None:
        super().__init__(message, signal, advice)  # all in args: the exception pickles (pase compare --jobs N)
        self.message, self.signal, self.advice = message, signal, advice

    def __str__(self) -> str:
        return f"{self.message}; {self.advice}" if self.advice else self.message
