# One image for every Tally process: api, worker, beat, flower and the one-shot
# migrate (docker-compose.yml picks the command). Build: docker build -t tally .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# psycopg[binary] and the other dependencies ship wheels: no compiler needed.
# Only what `tally serve ...` and `tally migrate` run: not bench/ nor examples/,
# and none of the extras (`tally up`'s embedded servers, the benchmark's load
# generator, the tests; pyproject.toml).
COPY pyproject.toml README.md Procfile alembic.ini ./
COPY api ./api
COPY worker ./worker
COPY shared ./shared
COPY broker ./broker
COPY cli ./cli
RUN pip install . \
    && useradd --system --uid 10001 --home-dir /app tally \
    && mkdir /metrics && chown tally /metrics

USER tally

# Inside a container the API (and Flower) must listen on every interface; logs
# are JSON lines for the log collector.
ENV TALLY_HOST=0.0.0.0 \
    TALLY_PORT=8000 \
    TALLY_LOG_FORMAT=json
EXPOSE 8000 5555

CMD ["tally", "serve", "web"]
