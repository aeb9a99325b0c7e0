"""Source configuration: one YAML file per SQL Server database, validated with pydantic.

Tables are configuration, not code: adding a table is a reviewed YAML edit. Validation runs when
the DAG file is parsed, so a broken file must fail loudly *for that file only* (one clear import
error naming the file and the field) and never stop the other sources' DAGs from loading.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from include.cdc_pipeline.errors import ConfigError

# Snowflake database, schema and stage names of the target (upper-cased, unquoted-safe): they are
# the deployment's own choice. Table and column names are quoted everywhere and take any name.
_SF_IDENT = r"^[A-Za-z_][A-Za-z0-9_$]{0,254}$"
_EMAIL = r"^[^@\s,;]+@[^@\s,;]+\.[^@\s,;]+$"
_DURATION = re.compile(r"^\s*(\d+)\s*(s|m|h|d)\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def _parse_duration(value: Any) -> Any:
    """Accept ``90s``, ``15m``, ``2h``, ``1d`` (readable in YAML) besides pydantic's own forms."""
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    return value


def _no_control_characters(value: Any) -> Any:
    """Any name SQL Server accepts for a schema, table or column: 1 to 128 characters, any
    character (spaces, quotes, ``]``, ``%``, Unicode letters, a leading digit) once delimited
    (learn.microsoft.com/en-us/sql/relational-databases/databases/database-identifiers: "Both
    regular and delimited identifiers must contain from 1 through 128 characters"; identifiers
    that break the rules for regular ones "must be delimited"). Every statement quotes names
    (``sql.tsql_ident``, ``sql.sf_ident``), so none can close its quote. Refused: control
    characters (NUL ends a string in the TDS client library; the others cannot be typed into
    YAML reliably and no real schema uses them). Snowflake names of our choosing (``target_table``,
    ``column_names``) follow the same rule with Snowflake's 255 characters
    (docs.snowflake.com/en/sql-reference/identifiers-syntax: a double-quoted identifier may hold any
    character, ``"`` written twice)."""
    if isinstance(value, str):
        bad = [c for c in value if unicodedata.category(c) == "Cc"]
        if bad:
            raise ValueError(f"name {value!r} contains control character(s) {sorted(set(bad))}")
    return value


Duration = Annotated[timedelta, BeforeValidator(_parse_duration)]
Identifier = Annotated[str, Field(min_length=1, max_length=128), BeforeValidator(_no_control_characters)]
# sp_cdc_enable_table: "@capture_instance can't exceed 100 characters"
CaptureInstanceName = Annotated[str, Field(min_length=1, max_length=100), BeforeValidator(_no_control_characters)]
SnowflakeName = Annotated[str, Field(min_length=1, max_length=255), BeforeValidator(_no_control_characters)]
SnowflakeIdentifier = Annotated[str, Field(pattern=_SF_IDENT)]
Email = Annotated[str, Field(pattern=_EMAIL)]


class DeleteMode(StrEnum):
    """What a source DELETE does to the current-state raw row."""

    SOFT = "soft"  # keep the row, set _CDC_DELETED / _CDC_DELETED_AT
    HARD = "hard"  # remove the row (the history table still records the delete)


class RetentionGapPolicy(StrEnum):
    """What to do when the watermark is older than the capture instance's start_lsn (changes lost)."""

    FAIL = "fail"  # stop the table with an error naming the gap; a human decides
    RESNAPSHOT = "resnapshot"  # reload the table from a fresh snapshot, then stream again


class ChangeReader(StrEnum):
    """Which driver reads the change rows of a stream window (README "Over TDS")."""

    AUTO = "auto"
    PYMSSQL = "pymssql"
    MSSQL_PYTHON = "mssql-python"


class PiiCategory(StrEnum):
    """What kind of personal data a column holds: the value of its Snowflake ``PII`` tag
    (README "Snowflake access, PII and cost guards")."""

    NAME = "name"
    EMAIL = "email"
    PHONE = "phone"
    ADDRESS = "address"
    BIRTH_DATE = "birth_date"
    NATIONAL_ID = "national_id"
    FINANCIAL = "financial"
    OTHER = "other"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TableDefaults(_Strict):
    """Per-table settings that a source can default for all its tables."""

    delete_mode: DeleteMode = DeleteMode.SOFT
    retention_gap_policy: RetentionGapPolicy = RetentionGapPolicy.FAIL
    max_transactions_per_batch: int | None = Field(default=None, gt=0)
    catch_up_seconds: int = Field(
        default=600,
        ge=0,
        description="When max_transactions_per_batch capped a window, how long one run keeps applying further "
        "capped windows up to the run's cut (0: one batch per run).",
    )
    freshness_sla: Duration = timedelta(hours=1)
    owner: str | None = None
    snapshot_chunk_rows: int = Field(
        default=500_000,
        gt=0,
        description="Rows per key-range chunk of a snapshot: the unit a crash re-reads and workers share.",
    )


class TableConfig(_Strict):
    """One replicated source table."""

    source_schema: Identifier = Field(alias="schema")
    table: Identifier
    capture_instance: CaptureInstanceName | None = Field(
        default=None,
        description="Pin one capture instance (at most 100 characters, as sp_cdc_enable_table allows). "
        "Unset: follow the table's instances (roll-over on schema change).",
    )
    primary_key: list[Identifier] = Field(min_length=1)
    exclude_columns: list[Identifier] = Field(default_factory=list)
    hash_columns: list[Identifier] = Field(default_factory=list)
    pii_columns: dict[Identifier, PiiCategory] = Field(
        default_factory=dict,
        description="Personal data, column -> category: tagged PII in Snowflake (raw and history) and masked "
        "except for the PII reader role. hash_columns stays for data no one may ever read (a column may be both).",
    )
    target_table: SnowflakeName | None = Field(
        default=None, description="Snowflake table name instead of the upper-cased source table name."
    )
    column_names: dict[Identifier, SnowflakeName] = Field(
        default_factory=dict,
        description="Snowflake column names instead of the upper-cased source names, e.g. {'Qty%': QTY_PCT}.",
    )
    delete_mode: DeleteMode | None = None
    retention_gap_policy: RetentionGapPolicy | None = None
    max_transactions_per_batch: int | None = Field(default=None, gt=0)
    catch_up_seconds: int | None = Field(default=None, ge=0)
    freshness_sla: Duration | None = None
    owner: str | None = None
    snapshot_chunk_rows: int | None = Field(default=None, gt=0)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _columns_consistent(self) -> TableConfig:
        key = {c.lower() for c in self.primary_key}
        if len(key) != len(self.primary_key):
            raise ValueError("primary_key lists a column twice")
        # A masked key would break every join on the key for the roles that see PII masked (readers, admins).
        for field in ("exclude_columns", "hash_columns", "pii_columns"):
            clash = key & {c.lower() for c in getattr(self, field)}
            if clash:
                raise ValueError(f"{field} must not contain primary key column(s) {sorted(clash)}")
        excluded_pii = {c.lower() for c in self.exclude_columns} & {c.lower() for c in self.pii_columns}
        if excluded_pii:
            raise ValueError(f"pii_columns lists column(s) {sorted(excluded_pii)} that exclude_columns leaves out")
        both = {c.lower() for c in self.exclude_columns} & {c.lower() for c in self.hash_columns}
        if both:
            raise ValueError(f"column(s) {sorted(both)} are both excluded and hashed")
        renamed: dict[str, str] = {}
        for source_name, target in self.column_names.items():
            if source_name.lower() in {c.lower() for c in self.exclude_columns}:
                raise ValueError(f"column_names renames {source_name!r}, which exclude_columns leaves out")
            other = renamed.setdefault(target.upper(), source_name)
            if other != source_name:
                raise ValueError(
                    f"column_names maps both {other!r} and {source_name!r} to Snowflake column {target.upper()!r}"
                )
        return self

    @property
    def default_capture_instance(self) -> str:
        """SQL Server's default name when none is given: ``<schema>_<table>``, trailing blanks
        trimmed (learn.microsoft.com/en-us/sql/relational-databases/system-stored-procedures/
        sys-sp-cdc-enable-table-transact-sql, @capture_instance)."""
        return f"{self.source_schema}_{self.table}".rstrip()

    @property
    def name(self) -> str:
        """Stable short name used in task ids, stage paths, Variable keys and control rows."""
        return table_slug(self.source_schema, self.table)

    @property
    def snowflake_table(self) -> str:
        """The raw table's name (quoted as is by ``sf_ident``): ``target_table`` or the source
        table's name, upper-cased (README "Table and column names")."""
        return (self.target_table or self.table).upper()

    def snowflake_column(self, source_name: str) -> str:
        """A source column's Snowflake name: its ``column_names`` entry, or the name upper-cased."""
        for name, target in self.column_names.items():
            if name.lower() == source_name.lower():
                return target.upper()
        return source_name.upper()


# Airflow task group ids allow [\w-] and 200 characters (airflow.sdk.definitions._internal.node,
# GROUP_KEY_REGEX, validate_group_key; task ids 250 with the group prefix). \w takes Unicode
# letters too, but stage paths and Variable keys are kept to ASCII.
_PLAIN_SLUG = re.compile(r"^[a-z0-9_]+$")
SLUG_MAX = 200


def table_slug(schema: str, table: str) -> str:
    """``<schema>_<table>`` lower-cased (``dbo_customers``) when that is plain ASCII letters,
    digits and underscores (every name a config could hold before names were opened up, so
    task ids, stage paths and control rows of existing deployments never change); otherwise a
    readable ASCII slug plus 8 hex digits of a hash of the exact (case-folded) names, unique and
    stable: ``dbo.[Order Details]`` -> ``dbo_order_details_52bf918d``."""
    plain = f"{schema}_{table}".lower()
    if _PLAIN_SLUG.match(plain) and len(plain) <= SLUG_MAX:
        return plain
    ascii_ = unicodedata.normalize("NFKD", plain).encode("ascii", "ignore").decode()
    readable = re.sub(r"[^a-z0-9]+", "_", ascii_).strip("_")[: SLUG_MAX - 9] or "table"
    # Case-folded like the names SQL Server's default (case-insensitive) collation treats as one;
    # a separator no name holds, so ("a_b", "c") and ("a", "b_c") differ.
    digest = hashlib.sha256(f"{schema}\x00{table}".casefold().encode("utf-8")).hexdigest()[:8]
    return f"{readable}_{digest}"


class AzureStageConfig(_Strict):
    """An external Azure stage: where the chunks are uploaded (the stage's URL points at the same place)."""

    wasb_conn_id: str = "wasb_default"
    container: Annotated[str, Field(pattern=r"^[a-z0-9](?:[a-z0-9-]{1,61}[a-z0-9])$")]
    prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9._/-]*$")] = ""


class SnowflakeTarget(_Strict):
    """Where a source lands in Snowflake."""

    database: SnowflakeIdentifier
    account: str = Field(
        default="local",
        pattern=r"^[A-Za-z0-9_.-]+$",
        description=(
            "Snowflake account identifier of the connection (its extra `account`), only to name Assets: "
            "set it so raw-table and Cosmos mart Assets share snowflake://<account>/… (lineage)."
        ),
    )
    staging_schema: SnowflakeIdentifier = "STAGING"
    raw_schema: SnowflakeIdentifier = "RAW"
    control_schema: SnowflakeIdentifier = "CONTROL"
    stage: SnowflakeIdentifier = "CDC_STAGE"
    azure_stage: AzureStageConfig | None = Field(
        default=None,
        description="Upload chunks to Azure Blob Storage; `stage` must then name an external stage over them.",
    )


class SourceConfig(_Strict):
    """One SQL Server database and the tables replicated from it (one DAG)."""

    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")]
    description: str = ""
    mssql_conn_id: str = "mssql_default"
    snowflake_conn_id: str = "snowflake_default"
    dbt_snowflake_conn_id: str | None = Field(
        default=None, description="Snowflake connection of the dbt DAG (<name>_dbt); unset: `snowflake_conn_id`."
    )
    dbt_role: str | None = Field(default=None, description="Snowflake role dbt runs as; unset: the connection's role.")
    smtp_conn_id: str = "smtp_default"
    alert_webhook_conn_id: str | None = Field(
        default=None,
        description="Also post alerts to this Slack/Teams incoming-webhook connection (URL in host or extra url).",
    )
    target: SnowflakeTarget
    schedule: str | None = Field(default="*/15 * * * *", description="Cron, @preset, or null for manual runs.")
    start_date: str = "2026-01-01"
    owner: str = "data-platform"
    alert_emails: list[Email] = Field(min_length=1)
    deadline: Duration | None = Field(default=None, description="Deadline Alert: e-mail when a run takes longer.")
    dbt_deadline: Duration | None = Field(
        default=None, description="Deadline Alert of the source's dbt DAG (<name>_dbt); unset: `deadline`."
    )
    chunk_rows: int = Field(
        default=20_000,
        gt=0,
        description="Rows per fetch and per Parquet file: bounds memory (3-4 chunks in flight, README).",
    )
    snapshot_workers: int = Field(
        default=2,
        gt=0,
        description="Snapshot worker tasks per run while a table is snapshotted (the cdc_sqlserver pool bounds them).",
    )
    snapshot_run_seconds: int = Field(
        default=240,
        gt=0,
        description="How long a run's snapshot workers keep claiming chunks (at most until 80 % of the time to "
        "the next scheduled run, and within the deadline); the next run goes on. The stream runs beside them.",
    )
    retention_minutes: int = Field(
        default=4320,
        gt=0,
        description="CDC cleanup retention (health checks); production reads msdb.dbo.cdc_jobs and falls back to this.",
    )
    retention_warn_fraction: float = Field(
        default=0.8, gt=0, lt=1, description="Warn when a table's position is this fraction of the retention old."
    )
    capture_stall_after: Duration = Field(
        default=timedelta(minutes=30),
        description="Alert when the max LSN time lags the source clock this much while the source is active.",
    )
    stuck_after: Duration = Field(
        default=timedelta(hours=2),
        description="Warn when a table has had no successful run (load or idle poll) for this long.",
    )
    failing_runs_alert: int = Field(
        default=3, gt=0, description="Alert when a table has failed this many DAG runs in a row."
    )
    realert_after: Duration = Field(
        default=timedelta(hours=4),
        description="An incident still open this long after its last mail is mailed again (a reminder).",
    )
    source_timezone: str = Field(
        default="UTC",
        description="IANA time zone of the SQL Server's clock (commit times in cdc.lsn_time_mapping, GETDATE()).",
    )
    change_reader: ChangeReader = Field(
        default=ChangeReader.AUTO,
        description="Driver of the change-table read: auto (mssql-python's Arrow batches for every table whose "
        "columns it carries exactly, pymssql for the others), pymssql, or mssql-python (refused for a table "
        "it cannot carry exactly). Control queries and snapshots always use the mssql provider's pymssql.",
    )
    change_reader_options: dict[str, str] = Field(
        default_factory=dict,
        description="Extra ODBC connection keywords of the mssql-python reader (e.g. TrustServerCertificate: 'no'); "
        "host, port, database, login, password and encryption come from the mssql connection.",
    )
    tags: list[str] = Field(default_factory=list)
    table_defaults: TableDefaults = TableDefaults()
    tables: list[TableConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_tables(self) -> SourceConfig:
        """Two tables must not share a source table, a Snowflake table (the raw table and its
        ``_HISTORY`` table, staging tables alike) or a slug (task ids, stage paths, control rows)."""
        seen: dict[tuple[str, str], int] = {}
        for index, table in enumerate(self.tables):
            longest = max(f"{table.snowflake_table}_HISTORY", f"{self.name}__{table.snowflake_table}", key=len)
            if len(longest) > 255:  # docs.snowflake.com/en/sql-reference/identifiers-syntax: 255 characters
                raise ValueError(
                    f"table {table.source_schema}.{table.table}: Snowflake name {longest!r} would be longer than "
                    "255 characters; set a shorter target_table"
                )
            keys = [
                # SQL Server's default collation is case-insensitive: dbo.Accounts is dbo.accounts
                ("source", f"{table.source_schema}.{table.table}".lower(), (table.source_schema, table.table)),
                ("target", table.snowflake_table, table.snowflake_table),
                ("target", f"{table.snowflake_table}_HISTORY", f"{table.snowflake_table}_HISTORY"),
                ("task name", table.name, table.name),
            ]
            for kind, shown, key in keys:
                other = seen.setdefault((kind, repr(key).casefold() if kind == "source" else repr(key)), index)
                if other != index:
                    first, second = (f"{t.source_schema}.{t.table}" for t in (self.tables[other], table))
                    raise ValueError(f"two tables share {kind} {shown}: {first!r} and {second!r}")
        return self

    @field_validator("source_timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not an IANA time zone name (e.g. UTC, Europe/Berlin)") from None
        return value

    @property
    def dag_id(self) -> str:
        return f"{self.name}_cdc"

    def to_utc(self, value: datetime | None) -> datetime | None:
        """A naive time of the source's clock as naive UTC (SQL Server stores local wall-clock times).

        In the hour a DST change repeats, the earlier of the two instants is taken (``fold=0``)."""
        if value is None or self.source_timezone == "UTC":
            return value
        return value.replace(tzinfo=ZoneInfo(self.source_timezone)).astimezone(UTC).replace(tzinfo=None)

    def setting(self, table: TableConfig, field: str) -> Any:
        """A table's own value for ``field``, else the source's ``table_defaults`` value."""
        value = getattr(table, field)
        return getattr(self.table_defaults, field) if value is None else value


def _format_validation_error(path: Path, error: ValidationError) -> str:
    lines = [f"{path}: invalid CDC source config ({error.error_count()} error(s))"]
    for item in error.errors():
        location = ".".join(str(part) for part in item["loc"]) or "<root>"
        lines.append(f"  - {location}: {item['msg']}")
    return "\n".join(lines)


def load_source_config(path: Path) -> SourceConfig:
    """Read and validate one YAML file; raise ConfigError naming file and field on any problem."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        return SourceConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(path, exc)) from None


def config_dir() -> Path:
    """The folder of source YAML files; ``CDC_CONFIG_DIR`` overrides it (tests, other deployments)."""
    import os

    override = os.environ.get("CDC_CONFIG_DIR")
    return Path(override) if override else Path(__file__).resolve().parents[1] / "config" / "sources"


def source_files(directory: Path | None = None) -> list[Path]:
    return sorted((directory or config_dir()).glob("*.y*ml"))
