# picture-worker: the long-running Supabase job-queue worker (docs/deployment.md).
#
#   docker build -t picture-worker .
#   docker run --env-file worker.env -p 8080:8080 picture-worker              the daemon
#   docker run --env-file worker.env -p 8000:8000 picture-worker functions    the edge-function
#                                                                             HTTP contracts
#   docker run -e DATABASE_URL=postgresql://... picture-worker migrate        apply the migrations
#
# BASE_IMAGE may be any Debian-based image with python3 (3.11+) and its venv module. Where
# no registry is reachable, docker/build-base-image.sh builds one from Debian's packages
# (--build-arg BASE_IMAGE=localhost/debian-python:bookworm). With podman, build with
# --format docker, or the OCI format drops the HEALTHCHECK.
ARG BASE_IMAGE=python:3.11-slim

# -- builder: a virtualenv with the runtime dependencies and the package -----------------
FROM ${BASE_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
RUN python3 -m venv /opt/venv
WORKDIR /src
# The dependencies get a layer of their own: it is rebuilt only when pyproject.toml changes.
# Runtime dependencies only: not the `test` extra, and never the development distribution
# (dev/: the local stack, the demo, the benchmarks), which the build context does not hold.
# Behind a TLS-intercepting proxy, hand pip the proxy's CA bundle as a build secret (it
# never enters a layer): --secret id=pip-ca,src=/etc/ssl/certs/ca-certificates.crt
COPY pyproject.toml ./
RUN --mount=type=secret,id=pip-ca \
    if [ -s /run/secrets/pip-ca ]; then export PIP_CERT=/run/secrets/pip-ca; fi \
 && python3 -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb')); \
print('\n'.join(p['project']['dependencies']))" > /tmp/requirements.txt \
 && /opt/venv/bin/pip install -r /tmp/requirements.txt
COPY README.md ./
COPY worker ./worker
COPY supabase/functions_compat ./supabase/functions_compat
# pip and setuptools are not needed at run time.
RUN --mount=type=secret,id=pip-ca \
    if [ -s /run/secrets/pip-ca ]; then export PIP_CERT=/run/secrets/pip-ca; fi \
 && /opt/venv/bin/pip install --no-deps . \
 && /opt/venv/bin/pip uninstall --yes --quiet pip setuptools

# -- runtime -----------------------------------------------------------------------------
FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="picture-worker" \
      org.opencontainers.image.description="Supabase job-queue worker for the Picture app's image generations" \
      org.opencontainers.image.licenses="MIT"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    WORKER_LOG_FORMAT=json
RUN useradd --uid 10001 --user-group --home-dir /app --no-create-home \
      --shell /usr/sbin/nologin worker
COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
# For `picture-worker migrate` (found at /app/supabase/migrations).
COPY supabase/migrations ./supabase/migrations
USER 10001:10001
# 8080: /healthz /readyz /metrics of `run` (WORKER_HEALTH_PORT); 8000: `functions --port`.
EXPOSE 8080 8000
# The daemon (PID 1, exec form) handles SIGTERM itself: it stops claiming, lets running jobs
# finish for WORKER_SHUTDOWN_GRACE (30 s) and releases the rest; give it more than that
# (`docker stop -t 45`, Kubernetes terminationGracePeriodSeconds: 45).
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % (os.environ.get('WORKER_HEALTH_PORT') or '8080'), timeout=4)"]
ENTRYPOINT ["picture-worker"]
CMD ["run"]
