# syntax=docker/dockerfile:1
# Credential sidecar image. Default command: `sidecar run --config /etc/sidecar/sidecar.yaml`;
# the injector webhook is the same image with `injector ...` as arguments.
#   docker build -t credential-sidecar:0.1.0 .
# Pin the base by digest in your registry (python:3.11-slim-bookworm@sha256:...) for repeatable
# builds; both stages must use the same image, since the venv links to its interpreter.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# Dependencies first, in their own layer: exactly the pinned versions, prebuilt wheels only
# (no compiler in this image, no sdist build scripts run).
COPY constraints.txt ./
RUN python -m venv /opt/sidecar \
 && /opt/sidecar/bin/pip install --only-binary=:all: --requirement constraints.txt
# Then the package itself, as a wheel, without resolving anything new; `pip check` fails the
# build if constraints.txt no longer covers what pyproject.toml requires.
COPY pyproject.toml README.md ./
COPY sidecar ./sidecar
RUN /opt/sidecar/bin/pip wheel --no-deps --wheel-dir /wheels . \
 && /opt/sidecar/bin/pip install --no-deps /wheels/*.whl \
 && /opt/sidecar/bin/pip check \
 && /opt/sidecar/bin/pip uninstall --yes pip setuptools

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="credential-sidecar" \
      org.opencontainers.image.description="Vault-backed credential sidecar for payment platforms" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /opt/sidecar /opt/sidecar
ENV PATH=/opt/sidecar/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# Numeric non-root user (the "nonroot" uid of distroless images), so Kubernetes' runAsNonRoot can
# verify it without an /etc/passwd entry. Nothing here needs a shell: exec-form entrypoint.
USER 65532:65532
# proxy (loopback), admin (loopback), health (probes); 8443 when run as the injector.
EXPOSE 8080 8099 8098 8443
ENTRYPOINT ["sidecar"]
CMD ["run", "--config", "/etc/sidecar/sidecar.yaml"]
