# carealarm: one image for every component (`carealarm gateway|monitor|central|db upgrade`).
# No configuration and no secrets are baked in: everything comes from CAREALARM_* at run time.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Only the project's own files are copied (never var/, .venv/ or a local passwd file).
# README.m[d] copies README.md when it exists and is skipped when it does not.
COPY pyproject.toml README.m[d] /src/
COPY carealarm /src/carealarm
COPY protocol /src/protocol
COPY storage /src/storage
COPY gateway /src/gateway
COPY monitor /src/monitor
COPY central /src/central
COPY devices /src/devices
RUN pip install /src \
    && rm -rf /src

RUN useradd --system --uid 10001 --user-group --create-home --home-dir /var/lib/carealarm carealarm
USER carealarm
WORKDIR /var/lib/carealarm
ENV CAREALARM_DATA_DIR=/var/lib/carealarm

EXPOSE 8000
CMD ["carealarm", "--help"]
