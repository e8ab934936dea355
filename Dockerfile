# Pachyderm's images: one build of the library, one image per deployable. The
# build context is the repository root; name the image you want as a target:
#
#   docker build --target worker   -t pachyderm-worker .   # workers/README.md (the default target)
#   docker build --target examples -t pachyderm-demo .     # the worker image + examples/
#   docker build --target gateway  -t pachyderm-gateway .  # gateway/README.md
#
# Both images are the same installed library (stages "build" and "runtime"),
# run as the same unprivileged user; they differ only in their command, port
# and health probe. Your app: build FROM the worker image (workers/README.md):
#
#   FROM pachyderm-worker
#   COPY myapp.py /app/
#   CMD ["worker", "myapp:app"]
#
# No secret is baked in: settings come at run time from PACHYDERM_* variables
# or from files in /run/secrets/pachyderm (one per variable).

ARG PYTHON_IMAGE=python:3.11-slim

# --- build: install the project and its dependencies into a virtualenv -------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/pachyderm
WORKDIR /src
# Exactly what the package build reads: pyproject.toml (dependencies, entry
# point), README.md (its long description) and the library itself. The
# dependency list lives in pyproject.toml only; nothing is repeated here.
COPY pyproject.toml README.md ./
COPY shared/ shared/
# pip and setuptools are not needed at run time, and the ones venv bundles have
# known advisories: the images ship without them.
RUN /opt/pachyderm/bin/pip install . \
    && /opt/pachyderm/bin/pachyderm --help >/dev/null \
    && /opt/pachyderm/bin/pip uninstall --yes pip setuptools

# --- runtime: the virtualenv on a clean base, as an unprivileged user --------
# What every image shares: the `pachyderm` command as entrypoint.
FROM ${PYTHON_IMAGE} AS runtime
# A fixed numeric uid/gid, so Kubernetes' runAsNonRoot can verify it.
RUN groupadd --system --gid 10001 pachyderm \
    && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin pachyderm
COPY --from=build /opt/pachyderm /opt/pachyderm
# Unbuffered logs; no .pyc writes (the root filesystem may be read-only);
# /app (the working directory) holds the user's app modules.
ENV PATH=/opt/pachyderm/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONPATH=/app
WORKDIR /app
USER 10001:10001
# SIGTERM: a worker finishes the batch in flight, acks, leaves the fleet and
# exits (well under a second); the gateway stops accepting, finishes the
# requests in flight and exits. Give either a grace period of 30 s.
STOPSIGNAL SIGTERM
ENTRYPOINT ["pachyderm"]
CMD ["--help"]

# --- gateway: `pachyderm gateway`, the HTTP front door -----------------------
FROM runtime AS gateway
# In a container the gateway must listen on every interface (the library's
# default, 127.0.0.1, is for a developer's machine); 8080 stays unprivileged.
ENV PACHYDERM_GATEWAY_HOST=0.0.0.0 \
    PACHYDERM_GATEWAY_PORT=8080
# HTTP API, /healthz, /readyz and /metrics, all on the gateway port.
EXPOSE 8080
# No curl in the slim image: probe /healthz with the standard library.
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PACHYDERM_GATEWAY_PORT', '8080'), timeout=4)"]
CMD ["gateway"]

# --- worker-runtime: what runs `pachyderm worker` (and migrate, topology, effects)
FROM runtime AS worker-runtime
# Health and metrics: /healthz, /readyz, /metrics on PACHYDERM_HEALTH_PORT, on
# every interface of the container (the library's default, 127.0.0.1 as for the
# gateway, is for a developer's machine), for probes and scrapes from outside.
ENV PACHYDERM_HEALTH_HOST=0.0.0.0
EXPOSE 8081
# No curl in the slim image: probe /healthz with the standard library.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PACHYDERM_HEALTH_PORT', '8081'), timeout=4)"]

# --- examples: the worker image plus examples/, serving examples.demo:APP -----
# What docker-compose.yml and the Kubernetes base run.
FROM worker-runtime AS examples
COPY examples/ /app/examples/
CMD ["worker", "examples.demo:APP"]

# --- worker (the default target): the library image users build FROM --------
FROM worker-runtime AS worker
