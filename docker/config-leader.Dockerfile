# config-leader image: a small runtime stage that takes the binary from the `pryv-config-binaries` image made by
# binaries.Dockerfile (host build) or builder.Dockerfile (Rust image). Without a registry:
#   docker/local-base.sh                                       # pryv-local-base:bookworm from Debian's packages
#   docker build -f docker/config-leader.Dockerfile --build-arg BASE_IMAGE=pryv-local-base:bookworm -t pryv/config-leader .
ARG BINARIES_IMAGE=pryv-config-binaries
ARG BASE_IMAGE=debian:bookworm-slim

FROM ${BINARIES_IMAGE} AS binaries

FROM ${BASE_IMAGE}
# git: the settings history (gitRepoPath, settings.git); ssh and the CA bundle for remotes.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends git openssh-client ca-certificates \
 && rm -rf /var/lib/apt/lists/*
RUN useradd --system --uid 10001 --home-dir /var/pryv --shell /usr/sbin/nologin pryv \
 && mkdir -p /var/pryv/config-leader && chown -R pryv:pryv /var/pryv
COPY --from=binaries /out/config-leader /usr/local/bin/config-leader
USER pryv
ENV CONFIG_LEADER_CONFIG=/var/pryv/config-leader/conf/config-leader.json
EXPOSE 7000
ENTRYPOINT ["/usr/local/bin/config-leader"]
CMD ["serve"]
