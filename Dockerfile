# One image with every binary: glance-operator, glance-api, glance-manage and the glance-cache-* tools.
# The operator passes its own image to the glance-api Deployment and the cache CronJobs.

FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
RUN cargo build --locked --release --bins \
    && mkdir /out \
    && for bin in glance-operator glance-api glance-manage glance-cache-pruner glance-cache-cleaner \
                  glance-cache-prefetcher glance-cache-manage; do \
         cp "target/release/${bin}" /out/; \
       done

# Distroless: glibc and CA certificates; no shell and no package manager at runtime.
FROM gcr.io/distroless/cc-debian12:nonroot
ARG VERSION=dev
LABEL org.opencontainers.image.title="glance-operator" \
      org.opencontainers.image.description="Kubernetes operator for OpenStack Glance's local image cache, with a Glance-compatible glance-api and the glance-cache tools" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/ /usr/local/bin/
# 65532 is distroless's nonroot user; glance-api pods run as 42415 through their securityContext.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/glance-operator"]
