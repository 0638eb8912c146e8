"""Everything grainline writes and reads back: the chunks table (``chunks``, its rows in
``rows``, its schema), the run ledger, the Parquet export (``parquet``; what an export
rewrites in ``export_segments``), maintenance, the inventory, and the table write
locks (``lock_protocol``; an OS lock in ``locks``, an object-store lease in ``lease``).
LanceDB's errors are typed once, in ``commits``. Imports only the base
(``grainline.documents``, ``errors``, ``defaults``, ``redact``, ``memory``): nothing of
embedding, ingestion or flows. Modules are imported one by one (LanceDB is
heavy), so this package re-exports nothing.

May import: defaults, documents, errors, memory, redact.
"""
