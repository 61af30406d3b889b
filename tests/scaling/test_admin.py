"""Staff admin of the shard map: shards listed read-only with their organizations, and the
organizations' list showing and filtering by shard."""

from __future__ import annotations

import pytest

from tenants import context
from tenants.models import Shard, Tenant
from tests.scaling.conftest import SHARD_B, SHARD_B_REGION, SHARDS
from tests.scaling.test_shards import provision

pytestmark = pytest.mark.django_db(databases=SHARDS)


@pytest.fixture
def staff_client(public_client, staff_user):
    with context.public_context():
        public_client.force_login(staff_user)
    return public_client


def test_the_shard_list_shows_each_shard_with_its_organizations(shard_b, staff_client):
    provision("eu-corp", SHARD_B_REGION)
    provision("eu-two", SHARD_B_REGION)
    with context.public_context():
        on_default = Tenant.objects.filter(shard="default").count()
        Shard.objects.filter(name=SHARD_B).update(
            url=shard_b.url.replace("postgres@", "postgres:pw@")
        )

    page = staff_client.get("/admin/tenants/shard/")

    assert page.status_code == 200
    html = page.content.decode()
    row = html[html.index(f">{SHARD_B}<") :]
    row = row[: row.index("</tr>")]
    assert SHARD_B_REGION in row and "100" in row
    assert f'?shard__exact={SHARD_B}">2</a>' in row  # links to its organizations
    assert "postgres:***@" in row and ":pw@" not in html  # the password is never shown
    assert "data-default-shard" in html
    plural = "s" if on_default != 1 else ""
    assert f'?shard__exact=default">{on_default} organization{plural}</a>' in html
    assert "Add shard" not in html


def test_shards_cannot_be_added_changed_or_deleted_in_admin(shard_b, staff_client):
    with context.public_context():
        shard = Shard.objects.get(name=SHARD_B)
    add = staff_client.get("/admin/tenants/shard/add/")
    change = staff_client.post(
        f"/admin/tenants/shard/{shard.pk}/change/", {"name": SHARD_B, "weight": 1}
    )
    delete = staff_client.post(f"/admin/tenants/shard/{shard.pk}/delete/", {"post": "yes"})
    assert add.status_code == 403
    assert delete.status_code == 403
    assert change.status_code == 403
    with context.public_context():
        assert Shard.objects.get(name=SHARD_B).weight == 100


def test_organizations_show_and_filter_by_shard(shard_b, staff_client):
    eu = provision("eu-corp", SHARD_B_REGION)
    us = provision("us-corp", "us-east-1")

    everyone = staff_client.get("/admin/tenants/tenant/").content.decode()
    on_b = staff_client.get(f"/admin/tenants/tenant/?shard__exact={SHARD_B}").content.decode()
    on_default = staff_client.get("/admin/tenants/tenant/?shard__exact=default").content.decode()
    detail = staff_client.get(f"/admin/tenants/tenant/{eu.pk}/change/").content.decode()

    assert "column-shard" in everyone and f'class="field-shard">{SHARD_B}<' in everyone
    assert eu.slug in on_b and us.slug not in on_b
    assert us.slug in on_default and eu.slug not in on_default
    assert f'<div class="readonly">{SHARD_B}</div>' in detail
