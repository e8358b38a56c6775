# Threadline server image. Configure it with THREADLINE_* / OPENAI_* environment variables
# (`threadline serve --help` lists them all).
#
# Defaults:
#   THREADLINE_ADDRESS=0.0.0.0:50051   listens on every interface, port 50051 (EXPOSEd); the
#                                      HEALTHCHECK asks the same address, so a changed port stays checked.
#                                      Change it with -e THREADLINE_ADDRESS=..., not with serve's --address,
#                                      which the HEALTHCHECK cannot see.
#   THREADLINE_DATABASE_URL=sqlite:////data/threadline.db
#                                      the embedded SQLite file in the /data volume: one replica. Set a
#                                      postgresql:// URL to run several replicas on one database.
#   /data                              a VOLUME owned by the unprivileged user `threadline` (uid 10001),
#                                      the working directory; mount it to keep threads across containers.
#   LANGGRAPH_STRICT_MSGPACK=true      checkpoints revive only known types.
#   the model                          the offline model unless OPENAI_API_KEY is set (OPENAI_BASE_URL and
#                                      THREADLINE_MODEL point at another OpenAI-compatible endpoint).
#   authentication                     0.0.0.0 is not loopback: the server starts only with API keys
#                                      (THREADLINE_API_KEYS_FILE) or JWTs (THREADLINE_JWT_JWKS) configured, or
#                                      THREADLINE_ALLOW_UNAUTHENTICATED=true (open mode: trusted networks only).
#   TLS                                off; THREADLINE_TLS_CERT_FILE/_KEY_FILE turn it on, and the HEALTHCHECK
#                                      then needs `threadline health --ca-file ...` (override HEALTHCHECK).
FROM python:3.11-slim AS build
WORKDIR /src
COPY constraints.txt pyproject.toml README.md LICENSE ./
COPY client ./client
COPY server ./server
RUN python -m venv /opt/threadline \
 && /opt/threadline/bin/pip install --no-cache-dir -c constraints.txt ./client .

FROM python:3.11-slim
COPY --from=build /opt/threadline /opt/threadline
RUN useradd --system --uid 10001 threadline && mkdir /data && chown threadline /data
USER threadline
WORKDIR /data
ENV PATH=/opt/threadline/bin:$PATH \
    THREADLINE_ADDRESS=0.0.0.0:50051 \
    THREADLINE_DATABASE_URL=sqlite:////data/threadline.db \
    LANGGRAPH_STRICT_MSGPACK=true
VOLUME /data
EXPOSE 50051
# `threadline health` asks grpc.health.v1 at $THREADLINE_ADDRESS: exit 0 only on SERVING (NOT_SERVING while
# starting, draining or cut off from the database).
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s CMD ["threadline", "health", "--timeout", "3"]
# SIGTERM reaches the server directly (exec form): health turns NOT_SERVING, calls drain, the pool closes.
ENTRYPOINT ["threadline", "serve"]
