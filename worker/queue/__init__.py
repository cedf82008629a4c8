"""The bullmq adapter: the only package that imports bullmq, split as Node BullMQ splits its own code.

``loop`` (the consumption loop on the pinned Python port), ``scripts`` (each Lua script's KEYS / ARGV order,
in one place), ``repeat`` (a repeat tick's next tick, as Node 5.56 computes it, with its Lua in ``lua/``),
``job_hash`` (a job hash checked and bounded before the port parses it), ``consumer`` (our worker on the
queue: options, connections, hand-off, cancel, close), ``producer`` (adding jobs and the admin actions),
``traces`` (stack traces as stored on jobs).
"""
