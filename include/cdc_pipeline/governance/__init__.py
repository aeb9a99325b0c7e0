"""Snowflake access, PII and cost guards as code (README "Snowflake access, PII and cost guards").

One declarative spec (``include/config/access.yaml``) plus what the source YAMLs already say
(databases, schemas, stage, PII columns) make the desired state of the Snowflake side
(:mod:`.spec`); :mod:`.live` reads an account's state with ``SHOW``/``DESCRIBE`` and information
schema queries; :mod:`.plan` compares the two and renders the idempotent statements that close the
gap (``make access-plan`` prints them, ``make access-apply`` runs them: a second plan is empty),
and names every missing grant for the preflight. :mod:`.credits` attributes warehouse credits to a
CDC batch from the query history.
"""
