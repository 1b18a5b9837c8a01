"""The error hierarchy. Every error a user can act on derives from PipelineError.

Each error knows whether it is transient (worth a retry) or terminal. Messages say what
happened and what to do next; they never contain a raw identifier or a secret.
"""

from __future__ import annotations


class PipelineError(Exception):
    """Root of every OpenCity error."""

    transient: bool = False

    def __init__(self, message: str, *, transient: bool | None = None) -> None:
        super().__init__(message)
        if transient is not None:
            self.transient = transient


class ConfigError(PipelineError):
    """A setting, flag or configuration file is missing or invalid."""


class DataQualityError(PipelineError):
    """Input data cannot be processed as a whole (unreadable file, missing column, failed suite)."""


class PrivacyBudgetError(PipelineError):
    """A release would spend more privacy budget than remains."""


class NotAchievableError(PipelineError):
    """No anonymization satisfies the requested privacy model with these settings."""


class GuardError(PipelineError):
    """The composition guard found a release exposing what another release protects (a
    withheld cell recoverable, a microdata class below k over its published columns, ...).

    Terminal: rerunning does not help; the report it names lists what is exposed."""


class StorageError(PipelineError):
    """The run's object storage could not be read or written (network, credentials).

    Transient: Airflow retries the task with backoff; the message names the store."""

    transient = True


class EngineError(PipelineError):
    """The compute engine of a release (e.g. the operator's Spark cluster) failed.

    Transient when the engine could not be reached (Airflow retries); terminal when a job
    failed on it. Nothing is spent: the ledger is only charged once the aggregates are back."""


class PublishError(PipelineError):
    """Publishing to a catalog failed."""


class InternalError(PipelineError):
    """A broken internal invariant: this is a bug, please report it."""

    def __init__(self, message: str) -> None:
        super().__init__(f"{message} (this is a bug in OpenCity; please report it)")
