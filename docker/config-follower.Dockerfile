# config-follower image: the follower plus the docker CLI and docker-compose (Debian's packages), talking to the
# host's engine through its socket. Build as config-leader.Dockerfile (same BINARIES_IMAGE / BASE_IMAGE).
ARG BINARIES_IMAGE=pryv-config-binaries
ARG BASE_IMAGE=debian:bookworm-slim

FROM ${BINARIES_IMAGE} AS binaries

FROM ${BASE_IMAGE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends docker.io docker-compose ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=binaries /out/config-follower /usr/local/bin/config-follower
# Root: it drives the host's Docker engine through /var/run/docker.sock (root-equivalent anyway).
ENV CONFIG_FOLLOWER_CONFIG=/var/pryv/config-follower/conf/config-follower.json
EXPOSE 6000
ENTRYPOINT ["/usr/local/bin/config-follower"]
