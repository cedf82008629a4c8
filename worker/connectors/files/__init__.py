"""The ``filesystem`` connector (``connector.py``) and its parts: names of any bytes, the listing walk, safe
bounded reads, batches, the background reader."""
