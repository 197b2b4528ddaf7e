"""Exceptions the command line reports specially; importable without torch (the CLI starts fast)."""

__all__ = ["RESUME_ADVICE", "RunInterrupted", "peer_stopped"]

#: set by pase.training.train on an error that stopped a DDP run's training (every rank's): what is kept and
#: how to continue, which pase.cli appends to the error line
RESUME_ADVICE = "pase_resume_advice"

#: how a collective reports that another process of the run is gone (gloo, NCCL)
_PEER_GONE = ("closed by peer", "reset by peer", "remote worker crash", "remote process exited")


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


def peer_stopped(error: BaseException) -> bool:
    """Whether ``error`` is this process's collective failing because another process of a DDP run stopped
    (gloo's "Connection closed by peer ... GLHF!"): that process's own error is the one to read."""
    return isinstance(error, RuntimeError) and any(s in str(error) for s in _PEER_GONE)
