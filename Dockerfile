# llm-collector image: a slim Python base, the collector installed with pip, run as a non-root user.
#   docker build -t llm-collector .
#   docker run -v $PWD/pipelines.yaml:/etc/llm-collector/pipelines.yaml:ro -v llmcol-queue:/var/lib/llm-collector \
#     -p 4317:4317 -p 4318:4318 llm-collector
# Mount your own pipelines.yaml over /etc/llm-collector/pipelines.yaml (a ConfigMap in Kubernetes); keep
# persistent queues (file_storage) under /var/lib/llm-collector, which is a volume.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN groupadd --system --gid 10001 collector \
 && useradd --system --uid 10001 --gid collector --home-dir /var/lib/llm-collector --no-create-home \
      --shell /usr/sbin/nologin collector

WORKDIR /opt/llm-collector
COPY pyproject.toml setup.py ./
COPY collector ./collector
COPY receivers ./receivers
COPY processors ./processors
COPY exporters ./exporters
# a C compiler for the native part (collector/_wirec.c) during the install only, removed in the same layer
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
 && python -m pip install --no-cache-dir . \
 && apt-get purge -y --auto-remove gcc libc6-dev && rm -rf /var/lib/apt/lists/* \
 && python -c "import collector._wirec" \
 && llm-collector components > /dev/null

COPY deploy/docker/pipelines.yaml /etc/llm-collector/pipelines.yaml
RUN mkdir -p /var/lib/llm-collector/queue /var/lib/llm-collector/data \
 && chown -R collector:collector /var/lib/llm-collector
VOLUME ["/var/lib/llm-collector"]
WORKDIR /var/lib/llm-collector

USER 10001:10001
# OTLP gRPC, OTLP HTTP, health_check, our own Prometheus metrics
EXPOSE 4317 4318 13133 8888
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:13133/', timeout=2).status == 200 else 1)"]

ENTRYPOINT ["llm-collector"]
CMD ["run", "--config", "/etc/llm-collector/pipelines.yaml"]
