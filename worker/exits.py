"""The exit codes of every ``crawl-worker`` command, in one place (README, "Exit codes"; the systemd unit's
``RestartPreventExitStatus`` names ``RET_CONFIG``)."""

RET_OK = 0  # done; drained and stopped cleanly
RET_ERROR = 1  # unexpected error; a failed `check`; an `enqueue --job-id` that exists
RET_CONFIG = 2  # invalid settings, catalog or arguments; a port that cannot be bound
RET_CONNECT = 3  # Redis unreachable during start-up
RET_FORCED = 4  # stopped by force: active jobs were cancelled (they will be recovered as stalled)
RET_NOT_FOUND = 5  # `jobs ...`: no such job
RET_PIPE = 141  # the reader of our output went away (128 + SIGPIPE, as a shell reports a Unix tool)
