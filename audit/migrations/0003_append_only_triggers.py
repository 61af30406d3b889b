"""Make the audit tables append-only in the database itself, in every schema.

The migration runs once per schema (audit is a shared and a tenant app); names are unqualified,
so the functions and triggers land in the schema being migrated (the first on its search_path).

- Events: UPDATE is always refused; DELETE only for rows whose sequence is at most the
  transaction-local setting `audit.retention_through`, which only the retention service sets
  (`SET LOCAL`-style, via set_config(..., true)); TRUNCATE always (a statement-level trigger: row
  triggers do not fire on TRUNCATE).
- Checkpoints: UPDATE, DELETE and TRUNCATE always refused.

A superuser can still bypass triggers (session_replication_role, DISABLE TRIGGER): that is what
the hash chain detects. docs/audit.md shows the GRANTs that keep the app's role from doing so.
"""

from django.db import migrations

FORWARD = r"""
CREATE OR REPLACE FUNCTION audit_event_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    through text := current_setting('audit.retention_through', true);
BEGIN
    IF TG_OP = 'DELETE' AND through IS NOT NULL AND through <> ''
       AND OLD.sequence <= through::bigint THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit events are append-only: % on %.% refused',
        TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'Only the audit retention command removes events.';
END;
$$;

CREATE OR REPLACE FUNCTION audit_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit records are append-only: % on %.% refused',
        TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER audit_event_no_update_delete
    BEFORE UPDATE OR DELETE ON audit_auditevent
    FOR EACH ROW EXECUTE FUNCTION audit_event_guard();
CREATE TRIGGER audit_event_no_truncate
    BEFORE TRUNCATE ON audit_auditevent
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();

CREATE TRIGGER audit_checkpoint_no_update_delete
    BEFORE UPDATE OR DELETE ON audit_auditcheckpoint
    FOR EACH ROW EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_checkpoint_no_truncate
    BEFORE TRUNCATE ON audit_auditcheckpoint
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();
"""

REVERSE = r"""
DROP TRIGGER IF EXISTS audit_checkpoint_no_truncate ON audit_auditcheckpoint;
DROP TRIGGER IF EXISTS audit_checkpoint_no_update_delete ON audit_auditcheckpoint;
DROP TRIGGER IF EXISTS audit_event_no_truncate ON audit_auditevent;
DROP TRIGGER IF EXISTS audit_event_no_update_delete ON audit_auditevent;
DROP FUNCTION IF EXISTS audit_refuse_change();
DROP FUNCTION IF EXISTS audit_event_guard();
"""


class Migration(migrations.Migration):
    dependencies = [("audit", "0002_checkpoint_and_alert_rules")]
    operations = [migrations.RunSQL(FORWARD, REVERSE)]
