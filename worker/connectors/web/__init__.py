"""The ``web`` connector (``connector.py``) and its parts: config, fetch, frontier, html, robots, sitemaps,
address guard, traps, URLs."""
