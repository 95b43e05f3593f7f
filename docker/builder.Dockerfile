# The two binaries built inside a Rust image (where a registry is reachable):
#   docker build -f docker/builder.Dockerfile -t pryv-config-binaries .
ARG BUILDER_IMAGE=rust:1-bookworm
FROM ${BUILDER_IMAGE}
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p config-leader -p config-follower \
 && mkdir /out && cp target/release/config-leader target/release/config-follower /out/
