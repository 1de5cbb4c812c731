# ecrm-hub: one image for every process; the command picks the role:
#   docker run IMAGE init | serve | worker | worker --webhooks | scheduler | config
# See docker-compose.yml and docs/deployment.md.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# Dependencies first (cached while only the code changes). The glob copies constraints.txt
# only if it exists; the pinned versions are the ones the test suite ran against.
COPY pyproject.toml README.md constraints.tx[t] ./
COPY connectors ./connectors
COPY pipeline ./pipeline
COPY identity ./identity
COPY personalization ./personalization
COPY workers ./workers
COPY migrations ./migrations
RUN if [ -f constraints.txt ]; then pip install -c constraints.txt . ; else pip install . ; fi \
    && rm -rf /src/build

# Non-root; ECRM_HOME holds the beat schedule (scheduler), file-import state and, only
# when ECRM_WRITE_KEYS/ECRM_ADMIN_TOKEN are unset, generated credentials.
RUN useradd --system --uid 10001 --home-dir /var/lib/ecrm --create-home ecrm
ENV ECRM_HOME=/var/lib/ecrm \
    ECRM_HTTP_HOST=0.0.0.0 \
    ECRM_HTTP_PORT=8000
USER ecrm
WORKDIR /var/lib/ecrm
EXPOSE 8000

ENTRYPOINT ["ecrm"]
CMD ["serve"]
