"""The results of a search, in two layers.

The I/O layer, the modules directly here, is what a running search writes through and reads back: where an
experiment lives (``storage``: a local path or an object-store URI), its Parquet tables (``parquet``, their
columns in ``schema``), its settings and space (``settings``, ``space``), the driver's lease (``lease``), the
retraining runs (``runs``) and the trials table's figures (``trials``). It never imports the analysis
(``tests/test_import_direction.py``).

The analysis, :mod:`results.analysis`, reads what the I/O layer wrote: the tables, the verdict, the statistics,
the pictures and the report of ``p2m results``. Neither layer imports torch or Ray.
"""
