# waggle in a container: built from this repository, run as a non-root user on Debian
# slim. SQLite by default, in the /var/lib/waggle volume; set WAGGLE_DATABASE_URL to a
# postgres:// URL for several nodes (see docker-compose.yml).
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p waggle \
    && cp target/release/waggle /usr/local/bin/waggle

FROM debian:bookworm-slim
# Not pinned: bookworm's stable packages take security fixes under the same version line.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 waggle \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/waggle --create-home waggle
COPY --from=build /usr/local/bin/waggle /usr/local/bin/waggle
USER 10001:10001
WORKDIR /var/lib/waggle
VOLUME ["/var/lib/waggle"]
ENV WAGGLE_LISTEN=0.0.0.0:8080 \
    WAGGLE_DATABASE_URL=sqlite:///var/lib/waggle/waggle.db
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["curl", "-fsS", "http://127.0.0.1:8080/healthz"]
# SIGTERM: waggle stops accepting, finishes or releases in-flight attempts within 7 s.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/waggle"]
CMD ["serve"]
