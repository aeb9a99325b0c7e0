"""The demo billing workload: one business model, two kinds of traffic, two sinks.

A small billing business (accounts, products, invoices, invoice lines, payments) that the local
stack and the tests run against. It is a *client* of the SQL Server emulator, not part of it.

* :mod:`.schema`   the source tables: columns, SQL Server types, keys, DDL, PII columns.
* :mod:`.model`    the business state in memory (:class:`~.model.SourceState`), transactions as
  row images (:class:`~.model.Tx` of :class:`~.model.Stmt`), the statement builders and the
  value helpers both kinds of traffic use.
* :mod:`.oltp`     traffic 1: a random mix of business operations (seeded), for CDC load.
* :mod:`.timeline` traffic 2: a calendar of business events over months (seeded), for the marts.
* :mod:`.tsql`     sink 1: runs transactions as T-SQL through any DB-API connection (the emulator,
  or SQL Server through pymssql); the command line (``python -m dev.workload``).
* :mod:`.bulk`     the emulator-only fast path of sink 1 (pre-built change rows as Arrow tables).
* :mod:`.cdclog`   sink 2: an in-memory CDC log (LSN, seqval, commit and load times per change),
  what ``dev.dbt_local`` seeds RAW and RAW ``*_HISTORY`` from.

This ``__init__`` re-exports nothing: import from the module that holds a name.
"""
