"""Every exception class of the package, in one place.

Each class keeps the base it always had: the Airflow task wiring decides by type which errors no
retry can fix (it fails the task at once) and which keep their retries, and callers catching the
built-in bases (``ValueError``, ``TypeError``, ``RuntimeError``) keep working. Raising stays where
the problem is found; only the classes live here (no logic, no imports of the package).
"""

from __future__ import annotations


class CdcError(RuntimeError):
    """A replication problem that needs a person; the message names table, cause and remedy."""


class TableNotCapturedError(CdcError):
    """The source table has no CDC capture instance, or not the one pinned in the config."""


class TableConfigError(CdcError):
    """The table's config does not fit the source (key or listed columns not captured, no salt set)."""


class SourceRewoundError(CdcError):
    """The source's max LSN is below the loaded position: the database was restored or re-created."""


class RetentionGapError(CdcError):
    """CDC cleanup purged changes that were never loaded (the watermark is older than the
    capture instance's start_lsn) and the table's policy is to fail."""


class ValueTooLargeError(CdcError):
    """A source value exceeds what a Snowflake VARCHAR or BINARY column holds."""


class SchemaDriftError(RuntimeError):
    """The raw table and the capture instance disagree in a way a human must resolve."""


class UnsupportedTypeError(TypeError):
    """A source column type the pipeline does not know how to carry. Names column and type."""


class ConfigError(ValueError):
    """A source config file is invalid. The message names the file and the offending field."""


class InjectedFailure(RuntimeError):
    """Raised by an armed failpoint (failpoints.py): a crash drill, never a real problem."""


class DriverLoadError(CdcError):
    """A SQL Server driver cannot load its native library (an OS package is missing): no retry
    can fix it. The message names the library, its Debian package and the fix."""


class SnapshotStarted(CdcError):
    """A stream window was given up for a snapshot (its start was purged while it was read and the
    table's policy is to re-snapshot): not a failure, the snapshot's chunks load next."""
