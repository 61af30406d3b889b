"""Settings: everything comes from the environment, with development defaults that need nothing."""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url

from core import logs as core_logs
from portal import devdata

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


DEBUG = env_bool("DEBUG", True)
SECRET_KEY = os.environ.get("SECRET_KEY") or devdata.development_secret_key()

# The portal's parent domain: the public host is PORTAL_DOMAIN, organizations live on
# <slug>.PORTAL_DOMAIN. Browsers resolve *.localhost to this machine, so development needs no DNS.
PORTAL_DOMAIN = os.environ.get("PORTAL_DOMAIN", "localhost")
PORTAL_PORT = os.environ.get("PORTAL_PORT", "8000" if DEBUG else "")
PORTAL_SCHEME = os.environ.get("PORTAL_SCHEME", "http" if DEBUG else "https")
ALLOWED_HOSTS = [PORTAL_DOMAIN, f".{PORTAL_DOMAIN}"]

DATABASE_URL = os.environ.get("DATABASE_URL") or devdata.embedded_database_url()
DATABASES = {
    "default": {
        **dj_database_url.parse(
            DATABASE_URL, conn_max_age=int(os.environ.get("CONN_MAX_AGE", "60"))
        ),
        "ENGINE": "django_tenants.postgresql_backend",
        "CONN_HEALTH_CHECKS": True,
    }
}
# psycopg prepares a statement on its fifth run on a connection (core.sql: the fixed statements of
# the write paths, bound on the server). Django's own cursors bind in the client and are never
# prepared. A pooler in front must run in session mode (docs/operations.md).
DATABASES["default"]["OPTIONS"] = {
    "prepare_threshold": 5,
    **DATABASES["default"].get("OPTIONS", {}),
}
# Shared apps in `public`, tenant apps in organizations' schemas, on every shard (tenants.routers).
DATABASE_ROUTERS = ["tenants.routers.ShardSyncRouter", "django_tenants.routers.TenantSyncRouter"]

REDIS_URL = os.environ.get("REDIS_URL", "")
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "agentplane",
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        }
    }
    CHANNEL_LAYERS = {
        "default": {
            # channels-redis' pub/sub layer, publishes batched (tenants/layers.py): one PUBLISH
            # per group, each process dispatching to its own sockets (docs/gateway.md).
            "BACKEND": "tenants.layers.PubSubChannelLayer",
            "CONFIG": {
                # A PUBLISH waits at most this long for Redis (events.PUBLISH_TIMEOUT_SECONDS).
                "hosts": [{"address": REDIS_URL, "socket_timeout": 5}],
                "prefix": "agentplane",
            },
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# django-tenants: tenants, domains and plans live in `public`; what an organization owns, its
# users included, lives in its own schema. Staff are the users of `public`.
TENANT_MODEL = "tenants.Tenant"
TENANT_DOMAIN_MODEL = "tenants.Domain"
PUBLIC_SCHEMA_NAME = "public"
# Issue `SET search_path` once per schema switch instead of on every cursor.
TENANT_LIMIT_SET_CALLS = True
# The guard that checks every query runs in the current tenant's schema (tests switch it on).
TENANT_CONTEXT_GUARD = env_bool("TENANT_CONTEXT_GUARD", False)

SHARED_APPS = [
    "tenants",
    "accounts",
    "audit",
    # Plan limits per resource, the usage ledger, meters (public tables, rows per organization).
    "billing",
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "django.contrib.messages",
    "portal.admin_site.PlatformAdminConfig",  # django.contrib.admin with a throttled sign-in
    # After admin: django-tenants' admin templates assume a tenant object on the public host,
    # where this project has none; Django's own admin templates are the ones wanted.
    "django_tenants",
    "django.contrib.staticfiles",
    "channels",
    "idempotency",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "csp",
    # Organization lifecycle (no models): provisioning, suspension, deletion, staff admin.
    "organizations",
    # Scale-out (no models): shards, moves, rebalancing, fleet migrations (docs/scaling.md).
    "scaling",
    "portal",
]
TENANT_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "accounts",
    "audit",
    "credentials",
    # Secrets and knowledge documents, encrypted with the organization's data key (vault/).
    "vault",
    # Agents, instances, the resource pool and config keys: tenant-only (platform defaults and
    # limit overrides are in `tenants`, in public).
    "agents",
    # The real-time gateway: consumers, tasks, per-minute instance metrics (docs/gateway.md).
    "gateway",
    # Custom tools: tenant JavaScript in V8 isolates in sandbox worker processes (docs/tools.md).
    "tools",
    # The autoscaler: per-agent scaling policies and decisions (docs/scaling.md).
    "autoscaler",
    # Responses kept 24 hours for `Idempotency-Key` retries (core.api.ApiView; docs/api.md).
    "idempotency",
]
INSTALLED_APPS = SHARED_APPS + [app for app in TENANT_APPS if app not in SHARED_APPS]

MIDDLEWARE = [
    # Health checks, the request id, the Host check and request metrics, before anything else.
    "portal.operations.OperationsMiddleware",
    "tenants.middleware.TenantRoutingMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "accounts.middleware.SessionMetaMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    # A staff support session: read-only, checked and recorded on every request.
    "organizations.middleware.SupportSessionMiddleware",
    # Members of an organization that requires two-factor authentication (and staff, with
    # STAFF_REQUIRE_TWO_FACTOR) set it up before anything else.
    "accounts.middleware.TwoFactorRequiredMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    # RateLimit-Policy / RateLimit on every API response (set by billing's throttle).
    "billing.middleware.rate_limit_headers",
]

ROOT_URLCONF = "portal.urls_tenant"
PUBLIC_SCHEMA_URLCONF = "portal.urls_public"
WSGI_APPLICATION = "portal.wsgi.application"
ASGI_APPLICATION = "portal.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "portal.navigation.context",
                "organizations.middleware.banner",
            ]
        },
    }
]

AUTH_USER_MODEL = "accounts.User"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "accounts:login"
LOGIN_REDIRECT_URL = "portal:dashboard"
LOGOUT_REDIRECT_URL = "accounts:login"

# Cookies are host-only (no Domain attribute): a session from one organization's host is never
# sent to another's.
SESSION_COOKIE_DOMAIN = None
CSRF_COOKIE_DOMAIN = None
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_SECURE = not DEBUG
CSRF_COOKIE_SECURE = not DEBUG
SESSION_COOKIE_AGE = 60 * 60 * 12
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
# Production (DEBUG=0) is served over HTTPS only: HSTS on the domain and its organizations'
# subdomains, HTTP redirected (the proxy in front says which scheme it received).
SECURE_SSL_REDIRECT = not DEBUG and env_bool("SECURE_SSL_REDIRECT", True)
SECURE_HSTS_SECONDS = 0 if DEBUG else int(os.environ.get("SECURE_HSTS_SECONDS", "31536000"))
SECURE_HSTS_INCLUDE_SUBDOMAINS = not DEBUG
SECURE_HSTS_PRELOAD = not DEBUG and env_bool("SECURE_HSTS_PRELOAD", True)
if os.environ.get("SECURE_PROXY_SSL_HEADER"):  # e.g. "HTTP_X_FORWARDED_PROTO,https"
    SECURE_PROXY_SSL_HEADER = tuple(os.environ["SECURE_PROXY_SSL_HEADER"].split(",", 1))
# Health checks come over plain HTTP from the load balancer, by IP.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
# Content security policy (django-csp): only this origin's scripts, no inline script; inline
# style attributes are allowed (the portal's templates use a few).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'", "'unsafe-inline'"],
        "img-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "font-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        # Signup and sign-in hand off between the public host and an organization's host.
        "form-action": [
            "'self'",
            f"{PORTAL_SCHEME}://{PORTAL_DOMAIN}:*",
            f"{PORTAL_SCHEME}://*.{PORTAL_DOMAIN}:*",
        ],
        "frame-ancestors": ["'none'"],
    }
}
DATA_UPLOAD_MAX_MEMORY_SIZE = 1024 * 1024

EMAIL_BACKEND = os.environ.get("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "AgentPlane <no-reply@agentplane.local>")

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
# Production serves `collectstatic` output (STATIC_ROOT) through WhiteNoise; development serves
# straight from the source folders.
STATIC_ROOT = None if DEBUG else BASE_DIR / "staticfiles"
WHITENOISE_USE_FINDERS = DEBUG
WHITENOISE_AUTOREFRESH = DEBUG
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Regions an organization's data may live in; residency policies (tenants.residency) allow subsets.
# Shard placement maps each to servers.
REGIONS = {
    "us-east-1": "US East (N. Virginia)",
    "us-east-2": "US East (Ohio)",
    "us-west-1": "US West (N. California)",
    "us-west-2": "US West (Oregon)",
    "eu-west-1": "EU (Ireland)",
    "eu-central-1": "EU (Frankfurt)",
    "eu-north-1": "EU (Stockholm)",
    "ap-southeast-1": "Asia Pacific (Singapore)",
}
DEFAULT_REGION = os.environ.get("DEFAULT_REGION", "us-east-1")
# The shard `default` (DATABASE_URL) is in DEFAULT_REGION; others are added with
# `manage.py shard_add` (docs/scaling.md). Until every region has its own shards, `default` also
# holds the organizations of the regions listed here (all of them unless set, as a deployment with
# one database always did). With residency rules that matter, list only the regions the database
# really is in (DEFAULT_SHARD_REGIONS=us-east-1): organizations allowed nowhere else are refused.
DEFAULT_SHARD_REGIONS = [
    region.strip()
    for region in os.environ.get("DEFAULT_SHARD_REGIONS", ",".join(REGIONS)).split(",")
    if region.strip()
]
# Its share of new organizations, against other shards' weights:
DEFAULT_SHARD_WEIGHT = int(os.environ.get("DEFAULT_SHARD_WEIGHT", "100"))
# The longest a move may pause an organization's writes (scaling.moves): a deadline, so that a
# mover killed mid-switch never leaves it paused. A normal switch lifts the pause far earlier.
MOVE_PAUSE_MAX_SECONDS = float(os.environ.get("MOVE_PAUSE_MAX_SECONDS", "10"))

# Spare, pre-migrated schemas that provisioning claims by renaming (see docs/adr/0002).
SCHEMA_POOL_SIZE = int(os.environ.get("SCHEMA_POOL_SIZE", "3"))
SCHEMA_POOL_BACKGROUND_REFILL = env_bool("SCHEMA_POOL_BACKGROUND_REFILL", True)

# Logs: one JSON object per line (core.logs), with the request id and the organization;
# LOG_FORMAT=plain for people reading a terminal.
LOG_FORMAT = os.environ.get("LOG_FORMAT", "json")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"organization": {"()": "tenants.logging.OrganizationFilter"}},
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
        "json": core_logs.json_formatter(),
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain" if LOG_FORMAT == "plain" else "json",
            "filters": ["organization"],
        }
    },
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "pgserver": {"level": "WARNING"},
        # A bad Host is answered and logged as one warning line by portal.operations.
        "django.security.DisallowedHost": {"level": "CRITICAL"},
    },
}
# /metrics answers these addresses (an internal bind, the scraper's network) and signed-in staff
# on the public host; everyone else gets a 404.
METRICS_ALLOWED_NETWORKS = [
    net.strip()
    for net in os.environ.get("METRICS_ALLOWED_NETWORKS", "127.0.0.1/32,::1/128").split(",")
    if net.strip()
]

# The API (core/api.py, credentials/authentication.py; docs/api.md). Every API view derives from
# core.api.ApiView and declares its permission per method; RequiredPermission denies the rest.
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # Bearer first: its WWW-Authenticate header makes a missing credential a 401.
        "credentials.authentication.BearerTokenAuthentication",
        "credentials.authentication.ApiKeyAuthentication",
        "credentials.authentication.PortalSessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["core.permissions.RequiredPermission"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["core.parsers.StrictJSONParser"],
    "DEFAULT_PAGINATION_CLASS": "core.permissions.Pagination",
    # Per-plan limits per resource and metering, in one Redis round trip (billing/throttles.py).
    "DEFAULT_THROTTLE_CLASSES": ["billing.throttles.PlanThrottle"],
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "core.api.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "core.api.ApiSchema",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "AgentPlane API",
    "DESCRIPTION": "The control plane's REST API, served on each organization's host.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "ApiKeyStatusEnum": ["active", "revoked", "expired"],
        "AgentPermissionEnum": "core.agent_permissions.NAMES",
    },
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}
# `Idempotency-Key` on the API's POSTs (core.api.ApiView -> this module; docs/api.md).
IDEMPOTENCY_STORE = "idempotency.store"
# JWTs: RS256 (pinned in credentials.tokens, not configurable), lifetimes from here.
JWT_ACCESS_TOKEN_LIFETIME_SECONDS = int(os.environ.get("JWT_ACCESS_TOKEN_LIFETIME", "900"))
JWT_REFRESH_TOKEN_LIFETIME_SECONDS = int(os.environ.get("JWT_REFRESH_TOKEN_LIFETIME", "86400"))
# Wraps the signing keys' private halves at rest (base64 of 32 bytes; docs/adr/0003). Without
# it, a key is derived from SECRET_KEY: acceptable in development, not in production.
SIGNING_KEY_WRAPPING_KEY = os.environ.get("SIGNING_KEY_WRAPPING_KEY", "")
# Two-factor authentication (accounts.two_factor, docs/operations.md "Two-factor authentication"):
# encrypts the authenticator secrets at rest (base64 of 32 bytes; without it, a key derived from
# SECRET_KEY). Changing it makes every enrolled authenticator unreadable.
TWO_FACTOR_KEY = os.environ.get("TWO_FACTOR_KEY", "")
# Platform staff must set up two-factor authentication before using Django admin (on by default
# in production; the development demo's staff account signs in with its password alone).
STAFF_REQUIRE_TWO_FACTOR = env_bool("STAFF_REQUIRE_TWO_FACTOR", not DEBUG)
# How long the code step of a sign-in waits after the password (seconds), and how many wrong codes
# it takes before the password must be entered again.
TWO_FACTOR_PENDING_SECONDS = 300
TWO_FACTOR_MAX_ATTEMPTS = 5
# Envelope encryption (vault/, docs/data-protection.md): each organization's data keys are stored
# only wrapped by the platform master key (base64 of 32 bytes), outside the database. Previous
# master keys (comma-separated) keep unwrapping until `manage.py rotate_master_key` re-wrapped all.
# In development (DEBUG) a master key is generated into .data/master_key on first use.
DATA_DIR = devdata.DATA_DIR
VAULT_MASTER_KEY = os.environ.get("AGENTPLANE_MASTER_KEY", "")
VAULT_MASTER_KEY_PREVIOUS = os.environ.get("AGENTPLANE_MASTER_KEY_PREVIOUS", "")
VAULT_MASTER_KEY_FILE = os.environ.get("AGENTPLANE_MASTER_KEY_FILE", "")
VAULT_GENERATE_MASTER_KEY = DEBUG
# The wrapped data keys: a directory (shared by every server of a deployment), or a KMS-backed
# class with the same interface (vault.keystore.KeyStore).
VAULT_KEYSTORE = os.environ.get("AGENTPLANE_KEYSTORE", "vault.keystore.LocalKeyStore")
VAULT_KEYSTORE_DIR = os.environ.get("AGENTPLANE_KEYSTORE_DIR", str(DATA_DIR / "keystore"))
# Two-phase deletion: days between the owner's request and the purge (the owner can export
# meanwhile; staff can cancel). Exports are written in EXPORT_REGION (default: the organization's
# home region), which its residency policy must allow.
# Retention per data class (vault.models.Classification), applied by `manage.py data_retention`:
# documents not changed for this many days are deleted; empty keeps them.
DATA_RETENTION_DAYS = {
    "general": int(os.environ["RETENTION_GENERAL_DAYS"])
    if os.environ.get("RETENTION_GENERAL_DAYS")
    else None,
    "confidential": int(os.environ.get("RETENTION_CONFIDENTIAL_DAYS", "730")),
    "restricted": int(os.environ.get("RETENTION_RESTRICTED_DAYS", "365")),
}
DELETION_GRACE_DAYS = int(os.environ.get("DELETION_GRACE_DAYS", "14"))
EXPORT_REGION = os.environ.get("EXPORT_REGION", "")
# Keys the HMAC of API key secrets (any long random string). Falls back to one derived from
# SECRET_KEY; changing it invalidates every API key.
API_KEY_HASH_KEY = os.environ.get("API_KEY_HASH_KEY", "")
# Sign-in over the API, per organization: per client address and per account.
API_TOKEN_RATE_PER_IP = os.environ.get("API_TOKEN_RATE_PER_IP", "20/m")
API_TOKEN_RATE_PER_ACCOUNT = os.environ.get("API_TOKEN_RATE_PER_ACCOUNT", "5/m")
API_KEY_CREATE_RATE = os.environ.get("API_KEY_CREATE_RATE", "30/h")
# Refused credentials (bad tokens and keys, refresh failures), per organization: per client
# address and for the whole organization. Over either, a 429 with Retry-After; fails closed.
AUTH_FAILURE_RATE_PER_IP = os.environ.get("AUTH_FAILURE_RATE_PER_IP", "60/m")
AUTH_FAILURE_RATE_PER_ORGANIZATION = os.environ.get("AUTH_FAILURE_RATE_PER_ORGANIZATION", "600/m")
# Failures from outside are recorded aggregated per source and window (audit.failures): a row
# for the first, one when the window reaches ALERT_AT, and a summary when the window closes.
AUDIT_FAILURE_WINDOW_SECONDS = int(os.environ.get("AUDIT_FAILURE_WINDOW_SECONDS", "60"))
AUDIT_FAILURE_ALERT_AT = int(os.environ.get("AUDIT_FAILURE_ALERT_AT", "5"))
# Audit log exports, per organization and actor (fails closed when Redis is down).
AUDIT_EXPORT_RATE = os.environ.get("AUDIT_EXPORT_RATE", "20/h")
# Who chains recorded events (audit/sealing.py, docs/operations.md "Audit sealing"). After commit,
# so no writer holds the organization's chain lock until its commit: "thread" (the default: a
# sealer thread in each process, one leader per schema), "inline" (the committing thread) or
# "off" (only a separate `manage.py seal_audit --every N` process). "immediate" chains in the
# writer's transaction, holding the chain's lock until commit (the test suite's in-transaction
# tests, whose on-commit callbacks never run: tests/conftest.py).
AUDIT_SEALER = os.environ.get("AUDIT_SEALER", "thread")
# AUDIT_SEALER=thread: the leading process's pause between sealing passes over a schema (the
# commits of every process within it are sealed together; about the added sealing lag). A pass
# costs its process about 1 ms of CPU whatever it seals: 0.05 s keeps that off the request path
# (bench/RESULTS.md, "lead:api-write-dec7").
AUDIT_SEAL_INTERVAL_SECONDS = float(os.environ.get("AUDIT_SEAL_INTERVAL_SECONDS", "0.05"))
# The longest a transaction that records an event may stay open: an unsealed event older than
# the chain's head by more than this was not written by `record` and is never sealed.
AUDIT_SEAL_MAX_DELAY_SECONDS = float(os.environ.get("AUDIT_SEAL_MAX_DELAY_SECONDS", "3600"))

# Billing (billing/, docs/billing.md): the API's rate limit and metering on every request (off
# only to measure their cost in benchmarks: never in production),
# how long Redis keeps hourly counters not yet rolled up and the ids of reported events.
BILLING_METERING = env_bool("BILLING_METERING", True)
BILLING_REDIS_TTL_SECONDS = int(os.environ.get("BILLING_REDIS_TTL", str(8 * 86400)))
BILLING_EVENT_DEDUP_SECONDS = int(os.environ.get("BILLING_EVENT_DEDUP", str(7 * 86400)))
BILLING_MAX_BATCH_EVENTS = 1000

# The real-time gateway (gateway/, docs/gateway.md).
GATEWAY_MAX_MESSAGE_BYTES = 64 * 1024
# Frames waiting for a connection's socket; a subscriber this far behind is disconnected (4008).
GATEWAY_QUEUE_SIZE = int(os.environ.get("GATEWAY_QUEUE_SIZE", "1000"))
GATEWAY_AUTH_TIMEOUT_SECONDS = float(os.environ.get("GATEWAY_AUTH_TIMEOUT", "10"))
# Open sockets check their credential (and the organization) again this often: a revoked key,
# a deactivated user or a suspended organization loses its sockets within this delay.
GATEWAY_RECHECK_SECONDS = float(os.environ.get("GATEWAY_RECHECK_SECONDS", "30"))
GATEWAY_PUBLISH_RATE_PER_CONNECTION = os.environ.get("GATEWAY_PUBLISH_RATE_PER_CONNECTION", "100/s")
# Per organization, the plan's `publish` limit (billing.PlanLimit); set, this replaces it for every
# organization (operators, benchmarks).
GATEWAY_PUBLISH_RATE_PER_ORGANIZATION = os.environ.get("GATEWAY_PUBLISH_RATE_PER_ORGANIZATION", "")
# A running instance with no heartbeat for this long is marked failed (manage.py check_heartbeats).
GATEWAY_HEARTBEAT_TIMEOUT_SECONDS = int(os.environ.get("GATEWAY_HEARTBEAT_TIMEOUT", "30"))
GATEWAY_MIN_HEARTBEAT_SECONDS = 1.0
# The consumers' database connection is pinged (SELECT 1) at most this often (gateway.db).
GATEWAY_DB_HEALTH_CHECK_SECONDS = float(os.environ.get("GATEWAY_DB_HEALTH_CHECK_SECONDS", "5"))

# Custom tools (tools/, docs/tools.md): the sandbox worker pool of each web process.
TOOLS_WORKERS = int(os.environ.get("TOOLS_WORKERS", "4"))
# Every isolate in a worker: V8's old generation may not grow past this (MiB).
TOOLS_WORKER_HEAP_MB = int(os.environ.get("TOOLS_WORKER_HEAP_MB", "256"))
# A worker's private writable memory (RLIMIT_DATA, MiB): array buffers and V8's heap alike.
TOOLS_WORKER_DATA_MB = int(os.environ.get("TOOLS_WORKER_DATA_MB", "1024"))
# A worker is replaced (in the background) after this many runs.
TOOLS_WORKER_RECYCLE_AFTER = int(os.environ.get("TOOLS_WORKER_RECYCLE_AFTER", "500"))
# How long a run waits for its organization's concurrency slot, then for a free worker (s).
TOOLS_CONCURRENCY_WAIT_SECONDS = float(os.environ.get("TOOLS_CONCURRENCY_WAIT", "1.0"))
TOOLS_WORKER_WAIT_SECONDS = float(os.environ.get("TOOLS_WORKER_WAIT", "5.0"))
# Sizes: code and input schema on save; input, output and captured logs per run.
TOOLS_MAX_CODE_BYTES = 64 * 1024
TOOLS_MAX_SCHEMA_BYTES = 16 * 1024
TOOLS_MAX_INPUT_BYTES = 64 * 1024
TOOLS_MAX_OUTPUT_CHARS = 256 * 1024
TOOLS_MAX_LOG_CHARS = 16 * 1024
# Host API: calls per run, bytes of arguments per call, and the key-value store.
TOOLS_MAX_CALLS = 100
TOOLS_MAX_CALL_BYTES = 64 * 1024
TOOLS_KV_MAX_KEYS = 1000
TOOLS_KV_MAX_VALUE_BYTES = 16 * 1024
