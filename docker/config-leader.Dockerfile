# config-leader image. No registry is needed when both images are given locally:
#   docker/local-base.sh                       # makes pryv-local-base:bookworm from Debian's packages
#   cargo build --release -p config-leader -p config-follower
#   DOCKER_BUILDKIT=1 docker build -f docker/config-leader.Dockerfile \
#     --build-arg BASE_IMAGE=pryv-local-base:bookworm --build-arg BINARIES=prebuilt -t pryv/config-leader .
# With a registry, the default builds the binaries in a Rust image (BINARIES=build).
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
RUN useradd --system --uid 10001 --home-dir /var/pryv --shell /usr/sbin/nologin pryv \
 && mkdir -p /var/pryv/config-leader && chown -R pryv:pryv /var/pryv
COPY --from=binaries /out/config-leader /usr/local/bin/config-leader
USER pryv
ENV CONFIG_LEADER_CONFIG=/var/pryv/config-leader/conf/config-leader.json
EXPOSE 7000
ENTRYPOINT ["/usr/local/bin/config-leader"]
CMD ["serve"]
