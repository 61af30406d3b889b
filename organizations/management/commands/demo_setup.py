"""`manage.py demo_setup`: the demo organization, its owner and a member, sample agents (one
autoscaled), and a staff account."""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand

from accounts import services as account_services
from accounts.models import User
from agents import services as agent_services
from agents.models import Agent
from autoscaler import services as autoscaler_services
from core.actors import Actor
from core.roles import Role
from organizations import services
from tenants import context
from tenants.models import Tenant

DEMO_SLUG = "acme"
DEMO_PASSWORD = "demo-password-123"  # development demo only; printed on purpose
STAFF_EMAIL = "staff@agentplane.local"
# The sample agents; the first is autoscaled on CPU and queue depth (docs/scaling.md).
SAMPLE_AGENTS = (
    {
        "name": "Support triage",
        "type": "assistant",
        "description": "Answers first-line support tickets and routes the rest.",
        "cpu": "0.5",
        "memory": "512MB",
        "config": {"model": "small", "temperature": 0.2},
    },
    {
        "name": "Nightly summarizer",
        "type": "batch",
        "description": "Summarises the day's conversations every night.",
        "cpu": "1",
        "memory": "1GB",
    },
)
SCALING = {
    "is_enabled": True,
    "min_instances": 1,
    "max_instances": 4,
    "window_minutes": 3,
    "scale_up_cooldown_seconds": 180,
    "scale_down_cooldown_seconds": 600,
    "cpu_up": 75,
    "cpu_down": 25,
    "memory_up": None,
    "memory_down": None,
    "queue_up": 10,
    "queue_down": 1,
    "response_up": None,
    "response_down": None,
}


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
            owner = Actor.for_user(User.objects.get(email=f"owner@{DEMO_SLUG}.test"))
            for sample in SAMPLE_AGENTS:
                if not Agent.objects.filter(name=sample["name"]).exists():
                    agent = agent_services.agent_create(actor=owner, **sample)
                    if sample is SAMPLE_AGENTS[0]:
                        autoscaler_services.policy_set(actor=owner, agent_id=agent.pk, **SCALING)
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
                    "    agents: "
                    + ", ".join(sample["name"] for sample in SAMPLE_AGENTS)
                    + f" (autoscaled: {SAMPLE_AGENTS[0]['name']})",
                    f"  Sign up another organization: {public}signup/",
                    f"  Staff admin: {public}admin/  ({STAFF_EMAIL} / {DEMO_PASSWORD})",
                    "",
                ]
            )
        )
