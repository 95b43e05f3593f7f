# config-follower image: the follower plus the docker CLI and docker-compose (Debian's packages), talking to the
# host's engine through its socket. Build as for config-leader.Dockerfile (same BASE_IMAGE / BINARIES arguments).
ARG BUILDER_IMAGE=rust:1-bookworm
ARG BASE_IMAGE=debian:bookworm-slim
ARG BINARIES=build

FROM ${BUILDER_IMAGE} AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p config-leader -p config-follower \
 && mkdir /out && cp target/release/config-leader target/release/config-follower /out/

FROM scratch AS prebuilt
COPY target/release/config-leader target/release/config-follower /out/

FROM ${BINARIES} AS binaries

FROM ${BASE_IMAGE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends docker.io docker-compose ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=binaries /out/config-follower /usr/local/bin/config-follower
# Root: it drives the host's Docker engine through /var/run/docker.sock (root-equivalent anyway).
ENV CONFIG_FOLLOWER_CONFIG=/var/pryv/config-follower/conf/config-follower.json
EXPOSE 6000
ENTRYPOINT ["/usr/local/bin/config-follower"]
