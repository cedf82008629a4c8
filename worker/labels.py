"""Bounded label values shared by the metrics, the stats hashes, the skip reasons and the error classes."""

#: What any name outside a bounded set is counted as (a job's connector type, an error, a skip reason).
OTHER = "other"
