"""grainline's flows as scheduled Prefect deployments (``schedules``, and
``prefect.yaml`` for a team's own Prefect server and workers). May import the flows
and everything below them; nothing imports it but the CLI.

May import: defaults, embedding, evaluation, flows, ingest, redact, storage.
"""
