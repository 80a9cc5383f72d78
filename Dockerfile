# gearworker image: the worker, the web app and gearmand itself, so that one
# image serves every service of docker-compose.yml.  Debian 13 (trixie) with
# Python 3.13 (the official image's trixie variant, named so that a later default
# Debian does not change the libraries under gearmand), and gearmand 2.0.0
# compiled in the first stage below (Debian 13 ships 1.1.21).  The Python steps
# mirror the install steps of scripts/bootstrap and the README (pip extras).

# -- stage 1: gearmand, gearman and gearadmin built from the source of a tag -----
# The same base as the image itself, so that the libraries it links are the ones
# the image installs.
FROM python:3.13-slim-trixie AS gearmand-build
ARG GEARMAND_VERSION=2.0.0
# The tag's source tarball, downloaded unless vendor/gearmand-$GEARMAND_VERSION.tar.gz
# is in the build context (scripts/gearmand-source puts a local copy there, for
# builds without access to GitHub).
ARG GEARMAND_URL=https://github.com/gearman/gearmand/archive/refs/tags/${GEARMAND_VERSION}.tar.gz
# Checked either way: sha256 of the extracted files (`sha256sum` of each, sorted by
# name), which does not depend on how the tarball was compressed.
ARG GEARMAND_TREE_SHA256=934f3e956e3fa9d50ab7905366c344a50e3061e348ca6c14c957deb374861017

RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
       autoconf automake libtool gperf pkg-config g++ make curl ca-certificates \
       libboost-program-options-dev libevent-dev uuid-dev libssl-dev libsqlite3-dev \
    && rm -rf /var/lib/apt/lists/*

COPY vendor/ /tmp/vendor/
WORKDIR /tmp/gearmand
RUN tarball="/tmp/vendor/gearmand-$GEARMAND_VERSION.tar.gz" \
    && if [ ! -f "$tarball" ]; then \
         echo "downloading $GEARMAND_URL" && tarball=/tmp/gearmand.tar.gz \
         && { curl -fsSL --retry 3 -o "$tarball" "$GEARMAND_URL" \
              || { echo "no download: without access to GitHub, put the tarball into vendor/ (scripts/gearmand-source TARBALL)" >&2; exit 1; }; }; \
       fi \
    && tar -xzf "$tarball" --strip-components=1 --no-same-owner \
    && rm -rf /tmp/vendor /tmp/gearmand.tar.gz \
    && tree="$(find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)" \
    && if [ "$tree" != "$GEARMAND_TREE_SHA256" ]; then \
         echo "gearmand $GEARMAND_VERSION source: tree sha256 $tree, expected $GEARMAND_TREE_SHA256" >&2; exit 1; \
       fi

# configure takes the version from `git describe`, and a tag's tarball has no git
# metadata: name it, or `gearmand --version` and the admin `version` answer are empty.
# SSL and the sqlite queue are required (configure would quietly leave them out);
# the other queue back ends are not built.  Only the three programs and libgearman
# are compiled (`make all` builds the test suite and benchmarks too), after the
# generated headers (BUILT_SOURCES), which only `all` makes first: a parallel make
# without configmake.h failed.  The manual pages need Sphinx and are left out.
RUN printf 'm4_define([VERSION_NUMBER], [%s])\n' "$GEARMAND_VERSION" > version.m4 \
    && ./bootstrap.sh -a \
    && ./configure --prefix=/usr/local --enable-ssl --with-sqlite3 \
       --disable-libmemcached --disable-hiredis --disable-libtokyocabinet --disable-libpq \
       --disable-dtrace \
    && grep -q '^#define HAVE_SSL 1' gear_config.h \
    && grep -q '^#define HAVE_LIBSQLITE3 1' gear_config.h \
    && printf 'built-sources: $(BUILT_SOURCES)\n' > built-sources.mk \
    && make -f Makefile -f built-sources.mk built-sources \
    && make -j"$(nproc)" gearmand/gearmand bin/gearman bin/gearadmin \
    && make install-sbinPROGRAMS install-binPROGRAMS install-libLTLIBRARIES DESTDIR=/stage \
    && cd /stage/usr/local \
    && rm lib/libgearman.a lib/libgearman.la lib/libgearman.so \
    && strip --strip-unneeded sbin/gearmand bin/gearman bin/gearadmin lib/libgearman.so.8.0.0

# -- stage 2: the image ------------------------------------------------------------
FROM python:3.13-slim-trixie

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# gearmand, and the gearman / gearadmin command-line tools used by the healthchecks,
# from stage 1 (with libgearman, about 600 KB), and the libraries they link (`ldd`:
# Boost.Program_options, libevent, OpenSSL, SQLite, libuuid, libstdc++).
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
       libboost-program-options1.83.0 libevent-2.1-7t64 libevent-core-2.1-7t64 \
       libevent-pthreads-2.1-7t64 libssl3t64 libsqlite3-0 libuuid1 libstdc++6 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=gearmand-build /stage/usr/local/ /usr/local/
RUN ldconfig \
    && ! ldd /usr/local/sbin/gearmand /usr/local/bin/gearman /usr/local/bin/gearadmin | grep 'not found' \
    && gearmand --version

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
