# The two binaries as an image layer, from a host build (no registry needed):
#   cargo build --release -p config-leader -p config-follower
#   docker build -f docker/binaries.Dockerfile -t pryv-config-binaries .
FROM scratch
COPY target/release/config-leader target/release/config-follower /out/
