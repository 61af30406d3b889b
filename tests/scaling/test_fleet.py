"""migrate_fleet: skips current schemas from their recorded state, resumes, reports failures."""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command

from scaling import fleet
from tenants import context, migration_state, schema_pool
from tenants.models import SchemaMigrationState, Tenant
from tests.scaling.conftest import SHARD_B, SHARD_B_REGION, SHARDS


def run(**options) -> fleet.FleetReport:
    return fleet.migrate_fleet(workers=1, **options)


def states() -> dict[tuple[str, str], str]:
    return migration_state.load()


def test_a_no_op_run_touches_no_schema_and_costs_two_queries(
    org, other_org, django_assert_num_queries
):
    run()  # records whatever was not recorded yet
    assert states()[("default", org.tenant.schema_name)] == schema_pool.migrations_fingerprint()

    with django_assert_num_queries(2):  # the organizations, the recorded states
        report = run()

    assert (report.total, report.skipped, report.migrated, report.failed) == (
        report.total,
        report.total,
        [],
        [],
    )
    assert report.total >= 3  # default's public, acme, globex


def test_a_schema_recorded_with_other_migrations_is_migrated_and_recorded(org, other_org):
    run()
    migration_state.record(shard="default", schema_name=org.tenant.schema_name, fingerprint="old")

    report = run()

    assert [str(outcome.target) for outcome in report.migrated] == [
        f"default:{org.tenant.schema_name}"
    ]
    assert states()[("default", org.tenant.schema_name)] == schema_pool.migrations_fingerprint()


def test_a_failing_schema_is_reported_and_the_rest_still_migrate(org, other_org):
    run()
    for tenant in (org.tenant, other_org.tenant):
        migration_state.record(shard="default", schema_name=tenant.schema_name, fingerprint="old")
    with context.public_context():
        # A directory row whose schema is gone: its migration fails.
        Tenant.objects.filter(pk=org.tenant.pk).update(schema_name="t_vanished")

    report = run()

    assert [str(outcome.target) for outcome in report.failed] == ["default:t_vanished"]
    assert "does not exist" in report.failed[0].error
    assert [str(outcome.target) for outcome in report.migrated] == [
        f"default:{other_org.tenant.schema_name}"
    ]
    with context.public_context():
        failed = SchemaMigrationState.objects.get(shard="default", schema_name="t_vanished")
    assert failed.fingerprint != schema_pool.migrations_fingerprint()
    assert "does not exist" in failed.error


def test_a_run_killed_halfway_resumes_with_the_schemas_not_done(org, other_org):
    run()
    for tenant in (org.tenant, other_org.tenant):
        migration_state.record(shard="default", schema_name=tenant.schema_name, fingerprint="old")
    seen = []

    def killed_after_one(done, total, outcome):
        seen.append(str(outcome.target))
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fleet.migrate_fleet(workers=1, progress=killed_after_one)
    resumed = run()

    assert seen == [f"default:{org.tenant.schema_name}"]
    assert [str(outcome.target) for outcome in resumed.migrated] == [
        f"default:{other_org.tenant.schema_name}"
    ]


@pytest.mark.django_db(databases=SHARDS)
def test_every_shard_and_its_organizations_are_migrated(shard_b):
    from organizations import services
    from tests.scaling.test_shards import SYSTEM, provision

    assert services and SYSTEM
    eu = provision("eu-corp", SHARD_B_REGION)
    migration_state.record(shard=SHARD_B, schema_name=eu.schema_name, fingerprint="old")

    report = run()

    migrated = {str(outcome.target) for outcome in report.migrated}
    assert f"{SHARD_B}:t_eu_corp" in migrated
    assert f"{SHARD_B}:public" in migrated or states()[(SHARD_B, "public")] == (
        schema_pool.shared_migrations_fingerprint()
    )
    assert report.failed == []
    assert states()[(SHARD_B, "t_eu_corp")] == schema_pool.migrations_fingerprint()


def test_the_command_migrates_in_parallel_with_progress(_orgs, django_db_blocker):
    """Worker processes need committed data: this test commits, then removes its records."""
    with django_db_blocker.unblock():
        try:
            fleet.migrate_fleet(workers=1)
            for slug in ("acme", "globex"):
                tenant = _orgs[slug].tenant
                migration_state.record(
                    shard="default", schema_name=tenant.schema_name, fingerprint="old"
                )
            out = io.StringIO()

            call_command("migrate_fleet", "--workers=2", stdout=out)

            lines = out.getvalue().splitlines()
            assert sorted(line.split()[0] for line in lines[:-1]) == ["[1/2]", "[2/2]"]
            assert all(" ok (" in line for line in lines[:-1])
            assert lines[-1].endswith("already current, 2 migrated, 0 failed")
            for slug in ("acme", "globex"):
                assert (
                    states()[("default", _orgs[slug].tenant.schema_name)]
                    == schema_pool.migrations_fingerprint()
                )
        finally:
            with context.public_context():
                SchemaMigrationState.objects.all().delete()


def test_the_command_fails_with_a_summary_when_a_schema_fails(org):
    migration_state.record(shard="default", schema_name=org.tenant.schema_name, fingerprint="old")
    with context.public_context():
        Tenant.objects.filter(pk=org.tenant.pk).update(schema_name="t_vanished")
    out, err = io.StringIO(), io.StringIO()

    with pytest.raises(CommandError, match="1 schema\\(s\\) failed"):
        call_command("migrate_fleet", "--workers=1", stdout=out, stderr=err)

    assert "default:t_vanished" in err.getvalue()
