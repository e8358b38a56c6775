# Threadline server image. Configure it with THREADLINE_* / OPENAI_* environment variables.
# It listens on 0.0.0.0:50051, so it starts only with authentication configured
# (THREADLINE_API_KEYS_FILE or THREADLINE_JWT_JWKS) or THREADLINE_ALLOW_UNAUTHENTICATED=true.
FROM python:3.11-slim AS build
WORKDIR /src
COPY constraints.txt pyproject.toml README.md ./
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
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s CMD ["python", "-c", "import grpc, sys; from grpc_health.v1 import health_pb2 as h, health_pb2_grpc as g; ch = grpc.insecure_channel('127.0.0.1:50051'); sys.exit(0 if g.HealthStub(ch).Check(h.HealthCheckRequest(), timeout=2).status == h.HealthCheckResponse.SERVING else 1)"]
# SIGTERM reaches the server directly (exec form): health turns NOT_SERVING, calls drain, the pool closes.
ENTRYPOINT ["threadline", "serve"]
