# gearworker image: the worker, the web app and gearmand itself, so that one
# image serves every service of docker-compose.yml.  The steps mirror the
# install steps of scripts/bootstrap and the README (Debian packages, then pip).
# Debian 13 (trixie) with Python 3.13: the official image's trixie variant, named so
# that a later default Debian does not change the packages under it.
FROM python:3.13-slim-trixie

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# gearmand (gearman-job-server, with its sqlite queue) and the gearman /
# gearadmin command-line tools used by the healthchecks.
RUN apt-get update \
    && apt-get install -y --no-install-recommends gearman-job-server gearman-tools \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
# Dependencies first, from pyproject.toml alone: editing the code then rebuilds in seconds
# instead of reinstalling Pillow, pyvips, uvicorn... (about a minute).
COPY pyproject.toml ./
# The build backend too, so that installing the package needs no download.
RUN python -c "import tomllib; t = tomllib.load(open('pyproject.toml', 'rb')); p = t['project']; \
print('\n'.join(t['build-system']['requires'] + p['dependencies'] \
                 + [r for e in ('images', 'web', 'metrics') for r in p['optional-dependencies'][e]]))" \
    > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt && rm /tmp/requirements.txt
# Then the package, so that editing handlers or settings does not reinstall it.
COPY README.md ./
COPY gearworker ./gearworker
RUN pip install --no-deps --no-build-isolation '.[images,web,metrics]'
COPY handlers ./handlers
COPY settings.py ./

# A dedicated unprivileged user; /data holds the volumes (gearmand's queue,
# photos), created here so that new named volumes inherit the ownership.
RUN useradd --system --uid 10001 --user-group --home-dir /app --shell /usr/sbin/nologin gearworker \
    && mkdir -p /data/gearmand /data/photos \
    && chown -R gearworker:gearworker /data
USER gearworker

# Settings come from the environment (GEARWORKER_<NAME>, see settings.py);
# these suit a container: JSON logs, metrics reachable from other containers.
ENV GEARWORKER_LOG_FORMAT=json \
    GEARWORKER_METRICS=0.0.0.0:9100
EXPOSE 9100 8000 4730
STOPSIGNAL SIGTERM
CMD ["python", "-m", "gearworker"]
