"""Session-wide fixtures: two organizations built once, users of every role, clients per host.

Everything a test writes inside `db` is rolled back. Tests that need committed data (threads,
on-commit callbacks, a server in another process) use `scratch_org`, which provisions a throwaway
organization for real and deletes it afterwards, instead of `transactional_db`, whose flush
would truncate the public schema's tables under the session's organizations.
"""

from __future__ import annotations

import os

# Fallbacks when pytest is run directly rather than through `make test`.
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/agentplane")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/1")
os.environ.setdefault("TENANT_CONTEXT_GUARD", "1")
os.environ.setdefault("SCHEMA_POOL_BACKGROUND_REFILL", "0")
# The session's wrapped data keys (vault.keystore) live in a directory of their own, shared with
# the servers tests start (tests/live.py passes the environment on).
if "AGENTPLANE_KEYSTORE_DIR" not in os.environ:
    import tempfile

    os.environ["AGENTPLANE_KEYSTORE_DIR"] = tempfile.mkdtemp(prefix="agentplane-keystore-")

from collections.abc import Iterator  # noqa: E402
from dataclasses import dataclass  # noqa: E402

import pytest  # noqa: E402
from django.test import Client  # noqa: E402

PASSWORD = "correct-horse-battery-staple"


@dataclass
class Org:
    """A session organization and one user per role (all committed)."""

    tenant: object
    owner: object
    admin: object
    member: object
    viewer: object

    @property
    def host(self) -> str:
        return self.tenant.host

    def user(self, role: str):
        return getattr(self, role)


def _fast_hasher() -> None:
    from django.conf import settings
    from django.contrib.auth.hashers import get_hashers, get_hashers_by_algorithm

    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    get_hashers.cache_clear()
    get_hashers_by_algorithm.cache_clear()


def build_org(slug: str, name: str) -> Org:
    from accounts import services as account_services
    from core.actors import Actor
    from organizations import services
    from tenants import context

    system = Actor.system("tests")
    tenant = services.provision_tenant(
        actor=system,
        slug=slug,
        name=name,
        owner_email=f"owner@{slug}.test",
        owner_password=PASSWORD,
        plan_slug="team",
    )
    with context.tenant_context(tenant):
        from accounts.models import User

        owner = User.objects.get(email=f"owner@{slug}.test")
        users = {
            role: account_services.user_create(
                actor=system,
                email=f"{role}@{slug}.test",
                password=PASSWORD,
                role=role,
                full_name=f"{role.title()} of {name}",
            )
            for role in ("admin", "member", "viewer")
        }
    return Org(tenant=tenant, owner=owner, **users)


def _inline_sealer() -> None:
    """In this process, audit events are chained as they are recorded ("immediate"), not after
    commit as in production (settings' default "thread"): a `db` test runs in a transaction that
    is rolled back, whose on-commit callbacks never run, so nothing would seal its events, and
    the suite's assertions on sequences, hashes and alerts right after a write need them chained.

    Code that runs out of the test's transaction runs the production default instead: every
    process the suite starts (tests/live.py `environment` passes no AUDIT_SEALER: manage.py
    commands, uvicorn/gunicorn servers behind the browser and gateway tests), and
    tests/audit/test_sealing.py's deferred sealers, including the default end to end. Their
    chain is read only after sealing (verification, exports and the event list seal first)."""
    from django.conf import settings

    settings.AUDIT_SEALER = "immediate"


@pytest.fixture(scope="session")
def django_db_setup(request, django_test_environment, django_db_blocker):
    """Create the test database, always (pytest-django's own fixture creates it only when a
    collected test asks for `db`, and `scratch_org` alone must not write to the real one), and
    build the two session organizations in it."""
    from django.test.utils import setup_databases, teardown_databases

    _fast_hasher()
    _inline_sealer()
    with django_db_blocker.unblock():
        config = setup_databases(
            verbosity=request.config.option.verbose,
            interactive=False,
            aliases={"default"},
            serialized_aliases=set(),
        )
        from tenants import context

        with context.public_context():
            build_org("acme", "Acme Inc")
            build_org("globex", "Globex Corp")
    yield
    with django_db_blocker.unblock():
        teardown_databases(config, verbosity=request.config.option.verbose)


@pytest.fixture(scope="session")
def _orgs(django_db_setup, django_db_blocker) -> dict[str, Org]:
    with django_db_blocker.unblock():
        from accounts.models import User
        from tenants import context
        from tenants.models import Tenant

        orgs = {}
        for slug in ("acme", "globex"):
            with context.public_context():
                tenant = Tenant.objects.select_related("plan").get(slug=slug)
            with context.tenant_context(tenant):
                users = {u.role: u for u in User.objects.filter(email__endswith=f"@{slug}.test")}
            orgs[slug] = Org(tenant=tenant, **users)
    return orgs


@pytest.fixture
def org(_orgs, db) -> Org:
    """Organization A."""
    return _orgs["acme"]


@pytest.fixture
def other_org(_orgs, db) -> Org:
    """Organization B: the attacker in cross-tenant tests."""
    return _orgs["globex"]


@pytest.fixture(autouse=True)
def _public_context_between_tests():
    """Each test starts in the public context, with no cached state from the previous one
    (rate-limit counters included: they live in the test Redis database)."""
    from django.core.cache import cache

    from billing import limits
    from billing import services as billing_services
    from credentials.authentication import clear_key_cache
    from tenants import context, routing

    context.activate(None)
    routing.clear()
    limits.forget()  # and a new period of its caches starts: none ends within a test
    clear_key_cache()
    cache.clear()
    billing_services._alerted.clear()  # the alert keys it remembers were in that Redis database
    yield
    context.activate(None)


@pytest.fixture
def in_tenant():
    """`with in_tenant(org): ...` runs the block in that organization's schema."""
    from tenants import context

    def enter(target):
        return context.tenant_context(getattr(target, "tenant", target))

    return enter


@pytest.fixture
def acme(org, in_tenant):
    """Run the test inside organization A's schema."""
    with in_tenant(org):
        yield org


class LayerLoop:
    """Channel-layer calls from synchronous tests, all on one event loop of their own (a thread).

    The pub/sub layer keeps its subscriptions per event loop: with `async_to_sync`, each call
    would run on a loop of its own, and a channel subscribed in one would never receive in the
    next. The in-memory layer (no Redis) is not thread-safe: it keeps `async_to_sync`.
    """

    def __init__(self) -> None:
        import asyncio
        import threading

        from channels.layers import InMemoryChannelLayer, get_channel_layer

        self.threaded = not isinstance(get_channel_layer(), InMemoryChannelLayer)
        self.loop = asyncio.new_event_loop() if self.threaded else None
        if self.loop is not None:
            threading.Thread(target=self.loop.run_forever, daemon=True).start()

    def run(self, coroutine_function, *args, timeout: float = 30.0):
        import asyncio

        from asgiref.sync import async_to_sync

        if self.loop is None:
            return async_to_sync(coroutine_function)(*args)
        future = asyncio.run_coroutine_threadsafe(coroutine_function(*args), self.loop)
        return future.result(timeout)

    def close(self) -> None:
        if self.loop is not None:
            from channels.layers import get_channel_layer

            self.run(get_channel_layer().flush)  # this loop's subscriptions and connections
            self.loop.call_soon_threadsafe(self.loop.stop)


@pytest.fixture
def layer_loop() -> Iterator[LayerLoop]:
    loop = LayerLoop()
    yield loop
    loop.close()


@pytest.fixture
def listen(layer_loop):
    """`receive = listen(tenant, subject)`; then `receive()` returns the next message published
    to that organization's subject on the real channel layer, or times out."""
    import asyncio

    from channels.layers import get_channel_layer

    from tenants.events import group_name

    layer = get_channel_layer()

    def start(tenant, subject: str):
        channel = layer_loop.run(layer.new_channel)
        layer_loop.run(layer.group_add, group_name(str(tenant.public_id), subject), channel)

        def receive(timeout: float = 2.0) -> dict:
            async def get() -> dict:
                return await asyncio.wait_for(layer.receive(channel), timeout)

            return layer_loop.run(get)

        return receive

    return start


@pytest.fixture
def client_for():
    """`client_for(org, user=None)`: a client on the organization's host, logged in if asked."""
    from tenants import context

    def make(target, user=None) -> Client:
        tenant = getattr(target, "tenant", target)
        client = Client(HTTP_HOST=tenant.host)
        if user is not None:
            with context.tenant_context(tenant):
                client.force_login(user)
        return client

    return make


@pytest.fixture
def public_client() -> Client:
    from django.conf import settings

    return Client(HTTP_HOST=settings.PORTAL_DOMAIN)


@pytest.fixture
def staff_user(db):
    from accounts.models import User
    from tenants import context

    with context.public_context():
        return User.objects.create_superuser(email="staff@platform.test", password=PASSWORD)


@pytest.fixture
def scratch_org(django_db_setup, django_db_blocker) -> Iterator[Org]:
    """A committed, throwaway organization (provisioned for real, deleted afterwards)."""
    import uuid

    from core.actors import Actor
    from organizations import services
    from tenants import context
    from tenants.models import Tenant

    with django_db_blocker.unblock():
        slug = f"scratch-{uuid.uuid4().hex[:8]}"
        with context.public_context():
            built = build_org(slug, f"Scratch {slug}")
        yield built
        context.activate(None)
        if Tenant.objects.filter(pk=built.tenant.pk).exists():
            services.tenant_delete(actor=Actor.system("tests"), tenant=built.tenant)
