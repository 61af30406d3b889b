"""`manage.py demo_setup`: the demo organization, its owner and a member, and a staff account."""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand

from accounts import services as account_services
from accounts.models import User
from core.actors import Actor
from core.roles import Role
from organizations import services
from tenants import context
from tenants.models import Tenant

DEMO_SLUG = "acme"
DEMO_PASSWORD = "demo-password-123"  # development demo only; printed on purpose
STAFF_EMAIL = "staff@agentplane.local"


class Command(BaseCommand):
    help = "Create the demo organization (idempotent) and print where to log in."

    def handle(self, *args, **options) -> None:
        actor = Actor.system("make demo")
        with context.public_context():
            tenant = Tenant.objects.filter(slug=DEMO_SLUG).first()
            if tenant is None:
                tenant = services.provision_tenant(
                    actor=actor,
                    slug=DEMO_SLUG,
                    name="Acme Inc",
                    owner_email=f"owner@{DEMO_SLUG}.test",
                    owner_password=DEMO_PASSWORD,
                    plan_slug="team",
                )
            if not User.objects.filter(email=STAFF_EMAIL).exists():
                account_services.staff_user_create(
                    actor=actor, email=STAFF_EMAIL, password=DEMO_PASSWORD
                )
        with context.tenant_context(tenant):
            if not User.objects.filter(email=f"member@{DEMO_SLUG}.test").exists():
                account_services.user_create(
                    actor=actor,
                    email=f"member@{DEMO_SLUG}.test",
                    password=DEMO_PASSWORD,
                    role=Role.MEMBER,
                    full_name="Demo Member",
                )
        port = f":{settings.PORTAL_PORT}" if settings.PORTAL_PORT else ""
        public = f"{settings.PORTAL_SCHEME}://{settings.PORTAL_DOMAIN}{port}/"
        self.stdout.write(
            "\n".join(
                [
                    "",
                    "AgentPlane demo is ready.",
                    f"  Organization portal: {tenant.url}",
                    f"    owner:  owner@{DEMO_SLUG}.test / {DEMO_PASSWORD}",
                    f"    member: member@{DEMO_SLUG}.test / {DEMO_PASSWORD}",
                    f"  Sign up another organization: {public}signup/",
                    f"  Staff admin: {public}admin/  ({STAFF_EMAIL} / {DEMO_PASSWORD})",
                    "",
                ]
            )
        )
