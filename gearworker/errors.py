"""The exceptions gearworker raises.

Everything derives from :class:`GearworkerError`, so ``except GearworkerError``
catches all of them.  Protocol errors are split the way h11 splits them: a
:class:`LocalProtocolError` means *we* were asked to do something the protocol
does not allow (a bug in the caller), a :class:`RemoteProtocolError` means the
peer sent something malformed (reset that connection, never the process).
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "ConnectionLost",
    "GearworkerError",
    "HandlerError",
    "JobError",
    "JobException",
    "JobFailed",
    "JobTimeout",
    "LocalProtocolError",
    "NoRetry",
    "NoServerAvailable",
    "ProtocolError",
    "RemoteProtocolError",
    "ServerRefused",
]


class GearworkerError(Exception):
    """Base class of every error raised by gearworker."""


class ProtocolError(GearworkerError):
    """The Gearman protocol was violated."""


class LocalProtocolError(ProtocolError):
    """We tried to encode something the protocol cannot express."""


class RemoteProtocolError(ProtocolError):
    """The peer sent bytes that are not valid Gearman."""


class ConfigError(GearworkerError):
    """A setting or a handler module is wrong.

    The message always names the file and the setting so that an operator can
    fix it without reading code.
    """

    def __init__(self, message: str, *, file: str | None = None, setting: str | None = None) -> None:
        self.file = file
        self.setting = setting
        self.detail = message
        where = []
        if file:
            where.append(file)
        if setting:
            where.append(f"setting {setting!r}")
        prefix = ": ".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class HandlerError(ConfigError):
    """A handler module cannot be loaded or registered."""


class ConnectionLost(GearworkerError):
    """The connection to a job server was lost."""


class NoServerAvailable(GearworkerError):
    """No configured job server could be reached."""


class ServerRefused(NoServerAvailable):
    """The job server answered a request with ERROR (e.g. its queue for the function is full)."""


class JobError(GearworkerError):
    """A job did not complete successfully."""

    def __init__(self, message: str, *, handle: bytes | None = None, function: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.handle = handle
        self.function = function


class JobFailed(JobError):
    """The worker reported WORK_FAIL (with its message, when it sent one)."""


class JobException(JobFailed):
    """The worker reported WORK_EXCEPTION; ``message`` carries its text."""


class JobTimeout(GearworkerError, TimeoutError):
    """A job ran past its timeout (worker side) or the caller stopped waiting."""


class NoRetry(GearworkerError):
    """Raise from a handler to fail the job at once, without the retries its ``@handler`` allows.

    For failures another attempt cannot fix (a malformed workload, a missing
    record)::

        if "id" not in data:
            raise NoRetry("workload has no 'id'")

    The client gets ``NoRetry: <message>`` as the failure message.  Chain the
    cause with ``raise NoRetry(...) from e`` to keep it in the logs.
    """
