"""The worker process: the delivery engine (claim, sign, send, record, retry: ``engine.py`` and its stages)
and the housekeeping crons (``crons.py``, on arq)."""
