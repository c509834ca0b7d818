"""The analysis of finished or running experiments: what ``p2m results`` prints and draws, and the statistics the
race and ``train-best`` decide with. It reads what the I/O layer (:mod:`results`) wrote and never writes
through it during a search; the I/O layer never imports it (``tests/test_import_direction.py``)."""
