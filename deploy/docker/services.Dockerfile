# Redis and Prometheus from Debian's packages, for the compose stack where no image registry is reachable
# (REDIS_IMAGE / PROMETHEUS_IMAGE in deploy/compose/compose.yaml); build-offline.sh services builds it.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server=5:7.* prometheus=2.* \
    && rm -rf /var/lib/apt/lists/*
