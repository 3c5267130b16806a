# One image for every Tally process: api, worker, beat and the one-shot migrate
# (docker-compose.yml picks the command). Build: docker build -t tally .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# psycopg[binary] and the other dependencies ship wheels: no compiler needed.
COPY pyproject.toml README.md Procfile alembic.ini ./
COPY api ./api
COPY worker ./worker
COPY shared ./shared
COPY cli ./cli
COPY bench ./bench
RUN pip install . \
    && useradd --system --uid 10001 --home-dir /app tally \
    && mkdir /metrics && chown tally /metrics

USER tally

# Inside a container the API must listen on every interface.
ENV TALLY_HOST=0.0.0.0 \
    TALLY_PORT=8000
EXPOSE 8000

CMD ["tally", "serve", "web"]
