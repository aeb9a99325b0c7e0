"""On-call alerts of the CDC DAGs (runbook: docs/runbook.md), in three modules:

* ``messages``: what an alert says (mail subjects and bodies, the chat text, the failure details
  read from a callback's context); no sending, no Airflow callback objects.
* ``channels``: how an alert is sent now (SMTP through the provider's hook, a chat webhook).
* ``callbacks``: when alerts go out, as Airflow wires them (task-failure notifiers, the DAG-run
  summary, Deadline Alerts) and to whom (a source's on-call list).

Nothing here opens a connection at import or DAG-parse time.
"""
