"""gearworker settings.

Every setting is listed here with its default, commented out: uncomment a line
to change it.  Names are UPPER_CASE; any other UPPER_CASE name is an error (a
typo must not silently fall back to a default), so prefix your own helper
names with an underscore.  This is Python: ``_os.environ[...]`` or
``Path(__file__).parent / "handlers"`` work.

Where values come from, later ones winning:

    defaults  <  this file  <  GEARWORKER_<NAME> environment variables  <  command-line flags

The file is ``./settings.py``, or the one named by ``--settings PATH`` or
``GEARWORKER_SETTINGS``.  Environment values are text: lists are
comma-separated (``GEARWORKER_SERVERS=h1:4730,h2:4730``) or JSON, mappings are
``name=value,name=value`` or JSON, ``none`` (or empty) means None.

Every value is checked at start-up; ``gearworker check`` shows what would run
or names the bad setting, where it came from and what was expected.
Reference: docs/settings.md.
"""

# --- Job servers ----------------------------------------------------------------

# Job servers as "HOST:PORT" (the port defaults to 4730; "[::1]:4730" for IPv6).
# The worker connects to all of them and takes jobs from each.  Empty: start a
# local gearmand on 127.0.0.1:LOCAL_GEARMAND_PORT (handy on a laptop; in
# production, list your servers).
# env GEARWORKER_SERVERS=h1:4730,h2:4730    flag --server H:P (repeatable)
# SERVERS = []

# Port of the local gearmand started when SERVERS is empty.
# env GEARWORKER_LOCAL_GEARMAND_PORT
# LOCAL_GEARMAND_PORT = 4730

# Seconds to wait for a TCP connection to a job server.
# env GEARWORKER_CONNECT_TIMEOUT
# CONNECT_TIMEOUT = 5.0

# Reconnect delays in seconds: the first retry waits RECONNECT_MIN, doubling
# (with jitter) up to RECONNECT_MAX while a server stays down.
# env GEARWORKER_RECONNECT_MIN, GEARWORKER_RECONNECT_MAX
# RECONNECT_MIN = 0.1
# RECONNECT_MAX = 10.0

# --- Liveness and TLS -------------------------------------------------------------
# The Gearman protocol has no liveness: a server whose host vanishes without a
# FIN would leave a connection that looks alive forever.  Every connection
# (worker and client) that has been silent HEARTBEAT_INTERVAL seconds sends
# ECHO_REQ and is dropped (then reconnected) when nothing arrives within
# HEARTBEAT_TIMEOUT: a dead server is noticed within their sum (20 s).
# 0 turns the heartbeat off.  docs/reliability.md has every bound.
# env GEARWORKER_HEARTBEAT_INTERVAL, GEARWORKER_HEARTBEAT_TIMEOUT
# HEARTBEAT_INTERVAL = 10.0
# HEARTBEAT_TIMEOUT = 10.0

# TCP keepalive, the kernel's own probe under the heartbeat: idle seconds
# before the first probe (0: off), seconds between probes, probes before the
# connection is dropped.
# env GEARWORKER_KEEPALIVE_IDLE, GEARWORKER_KEEPALIVE_INTERVAL, GEARWORKER_KEEPALIVE_COUNT
# KEEPALIVE_IDLE = 10
# KEEPALIVE_INTERVAL = 5
# KEEPALIVE_COUNT = 3

# A sleeping worker asks for work every IDLE_POLL seconds even without a NOOP:
# gearmand 1.1 hands out a scheduled (SUBMIT_JOB_EPOCH) job only when something
# wakes a worker (gearmand #101), and 2.0.0 with --threads=0 does not send the
# NOOP it means to (docs/gearmand.md).  0: off.
# env GEARWORKER_IDLE_POLL
# IDLE_POLL = 1.0

# What happens to a job whose connection to its server drops: gearmand has
# already re-queued it and its result can no longer be delivered.  "cancel"
# cancels an async handler and kills a CPU job's process; "finish" lets it
# run to the end (side effects complete, result dropped).  Either way
# shutdown does not wait for it.
# env GEARWORKER_ON_CONNECTION_LOST
# ON_CONNECTION_LOST = "cancel"

# TLS to the job servers (gearmand built with SSL, or stunnel in front of it).
# The server certificate is verified against TLS_CA_FILE (None: the system's
# CAs) and TLS_SERVER_HOSTNAME (None: the host of each address).  A client
# certificate is sent when TLS_CERT_FILE is set.  Never falls back to plaintext.
# env GEARWORKER_TLS, GEARWORKER_TLS_CA_FILE, GEARWORKER_TLS_CERT_FILE, GEARWORKER_TLS_KEY_FILE,
#     GEARWORKER_TLS_SERVER_HOSTNAME
# TLS = False
# TLS_CA_FILE = None
# TLS_CERT_FILE = None
# TLS_KEY_FILE = None
# TLS_SERVER_HOSTNAME = None

# --- Identity --------------------------------------------------------------------

# Host part of the client id gearmand shows in `gearadmin --workers`:
# "<CLIENT_ID>-<pid>@gearworker/<version>"; empty means the host name.  One word
# (no spaces), at most 64 characters.
# env GEARWORKER_CLIENT_ID    flag --client-id ID
# CLIENT_ID = ""

# Most GRAB_JOB requests kept in flight per server connection under load: more
# hides the round trip to gearmand when jobs are short.  After a quiet spell a
# connection starts from one grab and doubles while every grab brings a job.
# env GEARWORKER_GRAB_PIPELINE
# GRAB_PIPELINE = 32

# Largest packet accepted from a server, in bytes (64 MiB); a bigger one drops
# that connection as a protocol error.
# env GEARWORKER_MAX_PACKET_SIZE
# MAX_PACKET_SIZE = 67108864

# --- Handlers -------------------------------------------------------------------

# Folder of handler modules: every *.py in it not starting with "_" is
# imported.  Relative to the working directory (systemd: WorkingDirectory=).
# env GEARWORKER_HANDLERS_DIR    flag --handlers DIR
# HANDLERS_DIR = "handlers"

# More function names served by existing handlers: {"function": "handler"}.
# This is the PHP daemon's $add_jobs.
# env GEARWORKER_ALIASES=old_name=echo,thumb=resize
# ALIASES = {}

# --- Concurrency and the process pool -------------------------------------------

# Jobs in flight at once in this process, all handlers together.
# env GEARWORKER_CONCURRENCY    flag --concurrency N
# CONCURRENCY = 100

# Per-handler limits {"handler": n}, overriding @handler(concurrency=...).
# env GEARWORKER_HANDLER_CONCURRENCY=resize=2,slow=10
# HANDLER_CONCURRENCY = {}

# Size of the process pool that runs cpu=True handlers.  Default: the number
# of CPU cores this process may use (os.sched_getaffinity).
# env GEARWORKER_PROCESSES    flag --processes N
# PROCESSES = <number of cores>

# Replace a pool process after this many jobs (guards against leaks in native
# libraries); None: never.
# env GEARWORKER_MAX_TASKS_PER_CHILD    flag --max-tasks-per-child N
# MAX_TASKS_PER_CHILD = None

# Replace a pool process once its resident memory passes this many MiB
# (checked after each job it runs); None: never.
# env GEARWORKER_MAX_CHILD_RSS
# MAX_CHILD_RSS = None

# --- Jobs -----------------------------------------------------------------------

# Seconds added to a handler's timeout in the CAN_DO_TIMEOUT sent to gearmand,
# so that our own timeout (which reports a clean failure) fires first.
# env GEARWORKER_TIMEOUT_MARGIN
# TIMEOUT_MARGIN = 5.0

# How a failed job is reported.  "fail": WORK_WARNING("ExcType: message") then
# WORK_FAIL, which every client understands.  "exception": WORK_EXCEPTION,
# which gearmand 1.1.20 garbles for clients that did not ask for exceptions.
# env GEARWORKER_FAILURE_STYLE
# FAILURE_STYLE = "fail"

# Keep a record of every job that failed for good (after its retries), for
# `gearworker failed list|show|retry|purge`.  A path ending in .db, .sqlite or
# .sqlite3 is an sqlite database; any other path is a folder of JSON files.
# None: no records (the failure is only logged).  See docs/jobs.md.
# env GEARWORKER_FAILED_JOBS=/var/lib/gearworker/failed.db
# FAILED_JOBS = None

# Workload bytes kept in a failed-job record (1 MiB); a record cut short is
# only retried with `gearworker failed retry --force`.
# env GEARWORKER_FAILED_WORKLOAD_LIMIT
# FAILED_WORKLOAD_LIMIT = 1048576

# A schedule's tick more than SCHEDULE_MAX_AGE seconds old is not submitted
# (a worker that was suspended skips it) and, should it reach a worker that
# late (a hung gearmand that resumes with a submit it had buffered, while the
# tick ran elsewhere), it is dropped there and logged (schedule.tick_dropped).
# See docs/jobs.md.
# env GEARWORKER_SCHEDULE_MAX_AGE
# SCHEDULE_MAX_AGE = 60.0

# Middlewares run around every job, "module:attribute" (a class is
# instantiated with no arguments).  Handler modules can also mark their own
# with @middleware.  See docs/jobs.md.
# env GEARWORKER_MIDDLEWARE=myapp.jobs:Audit
# MIDDLEWARE = []

# --- Shutdown, process ----------------------------------------------------------

# Seconds in-flight jobs may finish after SIGTERM before they are handed back
# to gearmand.  Keep systemd's TimeoutStopSec (and compose's stop_grace_period)
# above it.
# env GEARWORKER_GRACE_PERIOD    flag --grace-period S
# GRACE_PERIOD = 30.0

# Pid file; a second worker with the same pid file refuses to start.
# env GEARWORKER_PID_FILE    flag --pid-file PATH
# PID_FILE = None

# --- Logs and metrics -----------------------------------------------------------

# Also append JSON log lines to this file.
# env GEARWORKER_LOG_FILE    flag --log-file PATH
# LOG_FILE = None

# "auto" (console on a terminal, JSON otherwise), "json" or "console".
# env GEARWORKER_LOG_FORMAT    flag --log-format F
# LOG_FORMAT = "auto"

# "debug", "info", "warning" or "error".
# env GEARWORKER_LOG_LEVEL    flag --log-level L
# LOG_LEVEL = "info"

# "HOST:PORT" (or just "PORT", bound to 127.0.0.1) for Prometheus /metrics and
# /healthz; None: off.  Use "0.0.0.0:9100" in a container.
# env GEARWORKER_METRICS    flag --metrics HOST:PORT
# METRICS = None

# --- Photos (resize handler, web app) -------------------------------------------

# Folders handlers may read and write when jobs carry file paths instead of
# bytes; paths outside them are refused.
# env GEARWORKER_STORAGE_ROOTS=/srv/photos,/srv/thumbs
# STORAGE_ROOTS = []

# Largest image, width x height in pixels, the resize handler decodes
# (a decompression bomb is refused before decoding).
# env GEARWORKER_MAX_IMAGE_PIXELS
# MAX_IMAGE_PIXELS = 100000000

# Largest upload accepted by the web app and the resize handler, in bytes (50 MiB).
# env GEARWORKER_MAX_UPLOAD_BYTES
# MAX_UPLOAD_BYTES = 52428800

# --- Web app (gearworker web) -------------------------------------------------

# Folder where the web app keeps photos: originals, copies and metadata, one
# folder per photo; they survive a restart.  In compose: the "photos" volume.
# env GEARWORKER_WEB_STORAGE_ROOT    flag --storage-root DIR
# WEB_STORAGE_ROOT = "var/photos"

# Photos the web app keeps; past this, the oldest finished photos are deleted.
# env GEARWORKER_WEB_MAX_PHOTOS
# WEB_MAX_PHOTOS = 500

# Bytes of photos (originals + copies) the web app keeps (2 GiB).
# env GEARWORKER_WEB_MAX_STORED_BYTES
# WEB_MAX_STORED_BYTES = 2147483648

# "bytes": the photo travels inside the resize job and the copies come back in
# its result (workers anywhere).  "file": the worker reads the original from
# and writes the copies to the shared storage root itself (its STORAGE_ROOTS
# must include WEB_STORAGE_ROOT, mounted at the same path).
# env GEARWORKER_WEB_PHOTO_MODE    flag --photo-mode MODE
# WEB_PHOTO_MODE = "bytes"

# A login for the web app: the output of `gearworker web --hash-password`
# (scrypt).  None: no login (then the app only listens on loopback, unless
# WEB_ALLOW_INSECURE_REMOTE).
# env GEARWORKER_WEB_PASSWORD_HASH
# WEB_PASSWORD_HASH = None

# Let the web app listen on a non-loopback address without a login (when a
# reverse proxy or a firewall guards the port).
# env GEARWORKER_WEB_ALLOW_INSECURE_REMOTE    flag --allow-insecure-remote
# WEB_ALLOW_INSECURE_REMOTE = False

# Host names the web app answers to besides localhost, loopback addresses and
# its --host address (e.g. ["photos.example.org"]); ["*"]: any.  Those answer
# on the --port only; a name here also on 80 and 443 (behind a proxy), and
# "name:port" on that port only (a proxy elsewhere, a container's published
# port such as "localhost:8080").  Other names and ports are refused (421): a
# defence against DNS rebinding.
# env GEARWORKER_WEB_ALLOWED_HOSTS=photos.example.org,localhost:8080
# WEB_ALLOWED_HOSTS = []

# Jobs and photos one client address may submit per minute (429 past it).
# env GEARWORKER_WEB_RATE_LIMIT
# WEB_RATE_LIMIT = 600

# Seconds a foreground job or a photo from the web app may wait and run.
# env GEARWORKER_WEB_JOB_TIMEOUT
# WEB_JOB_TIMEOUT = 300.0

# "HOST:PORT" (or just "PORT", bound to 127.0.0.1) where the web app also serves
# /metrics (gearmand's jobs waiting, running and workers per function, and the
# failed-job counts) and /healthz without a login, for Prometheus and autoscalers.
# The app's own /metrics asks for the login like every other page.
# env GEARWORKER_WEB_METRICS    flag --metrics HOST:PORT
# WEB_METRICS = None

# The workers' METRICS addresses ("HOST:PORT" each): the console scrapes them
# for jobs done and failed per second and run times (p50, p95) per function.
# env GEARWORKER_WEB_WORKER_METRICS=worker1:9100,worker2:9100
# WEB_WORKER_METRICS = []
