"""grainline's Prefect flows: thin wiring of tasks over the phases' own functions
(``ingest``: the ingestion flow over :func:`grainline.ingest.run_batches`; ``evaluate``:
the evaluation's steps; ``related``: related-document precomputation) and which errors
a task retries (``retry``, by error type). Nothing here decides what is stored or
scored; that lives in the phase it wires.

May import: documents, embedding, errors, evaluation, ingest, readers, related, storage.
"""
