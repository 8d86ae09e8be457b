# One image for every ackflow role. The command picks the role:
#   docker run ackflow:local gateway | relay | worker | migrate | tenant create NAME
# each configured by environment variables (DATABASE_URL, REDIS_URL, TEMPORAL_ADDRESS, ...;
# see ackflow/settings.py). docker-compose.yml runs the whole stack from it.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Only what `pip install '.[server]'` needs: the project metadata (pyproject.toml names README.md
# as its readme and LICENSE as its license file) and the packages it installs. The server extra
# (the services), not the dev one (embedded servers) nor the test tools.
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY ackflow ./ackflow
COPY gateway ./gateway
COPY workflows ./workflows
COPY activities ./activities
COPY outbox_cdc ./outbox_cdc
COPY callbacks ./callbacks
COPY examples ./examples
RUN pip install '.[server]' && rm -rf build *.egg-info

RUN groupadd --gid 10001 ackflow \
    && useradd --uid 10001 --gid ackflow --create-home --shell /usr/sbin/nologin ackflow
USER 10001:10001
WORKDIR /home/ackflow

# In a container the gateway must listen on all interfaces, or a published port cannot reach it.
ENV ACKFLOW_HOST=0.0.0.0
EXPOSE 8000

# Exec form: ackflow is PID 1 and receives SIGTERM itself, so `docker stop` shuts a role down cleanly.
ENTRYPOINT ["ackflow"]
CMD ["--help"]
