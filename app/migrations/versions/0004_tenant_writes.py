"""Tenants write only what a client supplies; per-tenant submission limits; one-round-trip submit.

- Privileges are granted per column: a tenant (`authenticated`) may INSERT a job's prompt,
  model, params and idempotency key (and the ids RLS checks), and UPDATE only
  `cancel_requested`, only to true. Status, result, attempts and leases are the worker's.
  `anon` gets nothing. On Supabase, default privileges grant ALL on new tables in `public`
  to anon and authenticated (supabase/supavisor dev/postgres/00-setup.sql shows the same
  `alter default privileges in schema public grant all on tables to anon, authenticated`;
  https://supabase.com/kb/troubleshooting/cant-change-the-default-privileges-of-supabase_admin-in-the-public-schema),
  so everything is revoked first and granted back narrowly.
- A trigger turns a cancel request on a queued job into `cancelled` at once, so that the API
  and a tenant using Supabase's REST API cancel the same way.
- A trigger enforces the limits of `liftoff.tenant_limits` on every tenant INSERT, whichever
  client sends it, with SQLSTATE PT429: PostgREST answers that with HTTP 429
  (https://docs.postgrest.org/en/stable/references/errors.html, "HTTP Status Codes"),
  and the API with 429 and Retry-After.
- `liftoff.submit_generation` does what the API's POST does in one statement: record the
  membership, take the tenant's role and claims, insert under RLS or return the job its
  idempotency key already names. Only the API's own role may call it.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
phase = "expand"

TABLES = ("organizations", "organization_members", "generations", "generation_logs")
ORG = "(SELECT liftoff.claim_org_id(auth.jwt()))"
UID = "(SELECT auth.uid())"
SUBMIT_SIGNATURE = "liftoff.submit_generation(text, text, boolean, uuid, uuid, text, text, jsonb, text, text)"
TENANT_INSERT_COLUMNS = "organization_id, created_by, prompt, model, params, idempotency_key, request_hash"
# The organization id of the defaults row of liftoff.tenant_limits.
DEFAULTS = "00000000-0000-0000-0000-000000000000"

CANCEL_TRIGGER = """
CREATE FUNCTION liftoff.on_cancel_requested() RETURNS trigger LANGUAGE plpgsql
-- Pinned: PostgREST and other callers set their own search_path (pg_temp is searched first).
SET search_path = pg_catalog, public AS $fn$
BEGIN
  -- A queued job has no worker to tell: it is cancelled now. A running one is stopped by
  -- its worker, which sees the flag at its next heartbeat.
  IF OLD.ai_status = 'queued' THEN
    NEW.ai_status := 'cancelled';
    NEW.finished_at := now();
  END IF;
  NEW.updated_at := now();
  RETURN NEW;
END
$fn$
"""

LIMIT_TRIGGER = """
CREATE FUNCTION liftoff.enforce_tenant_limits() RETURNS trigger LANGUAGE plpgsql
-- Pinned: PostgREST and other callers set their own search_path (pg_temp is searched first).
SET search_path = pg_catalog, public AS $fn$
DECLARE
  max_active int;
  per_minute int;
  active int;
  recent int;
  oldest timestamptz;
BEGIN
  -- Tenants only: the service role and the app's own role are operators.
  IF current_user NOT IN ('authenticated', 'anon') THEN
    RETURN NEW;
  END IF;
  -- A retried request whose key already names a job replays it, whatever the limits say now.
  IF NEW.idempotency_key IS NOT NULL AND EXISTS (
    SELECT FROM generations
    WHERE organization_id = NEW.organization_id AND idempotency_key = NEW.idempotency_key
  ) THEN
    RETURN NEW;
  END IF;
  -- One submission of an organization at a time from here to its commit, so each one counts
  -- what the one before it committed: the limits are exact under concurrency. Other
  -- organizations never wait.
  PERFORM pg_advisory_xact_lock(hashtextextended('liftoff.tenant_limits:' || NEW.organization_id::text, 0));
  SELECT l.max_active_jobs, l.max_submissions_per_minute INTO max_active, per_minute
  FROM liftoff.tenant_limits l
  WHERE l.organization_id IN (NEW.organization_id, liftoff.default_limits_id())
  ORDER BY l.organization_id = liftoff.default_limits_id()
  LIMIT 1;
  -- Counted under the tenant's own RLS, and never past the limit: each check costs at most
  -- `limit` index entries.
  IF max_active IS NOT NULL THEN
    SELECT count(*) INTO active FROM (
      SELECT FROM generations
      WHERE organization_id = NEW.organization_id AND ai_status IN ('queued', 'running')
      LIMIT max_active
    ) AS a;
    IF active >= max_active THEN
      RAISE SQLSTATE 'PT429' USING
        MESSAGE = format('The organization has %s jobs queued or running, its limit.', max_active),
        DETAIL = 'active_jobs', HINT = '10';
    END IF;
  END IF;
  IF per_minute IS NOT NULL THEN
    SELECT count(*), min(created_at) INTO recent, oldest FROM (
      SELECT created_at FROM generations
      WHERE organization_id = NEW.organization_id AND created_at > now() - interval '1 minute'
      ORDER BY created_at DESC
      LIMIT per_minute
    ) AS r;
    IF recent >= per_minute THEN
      RAISE SQLSTATE 'PT429' USING
        MESSAGE = format('The organization submitted %s jobs in the last minute, its limit.', per_minute),
        DETAIL = 'submission_rate',
        HINT = greatest(1, ceil(60 - extract(epoch FROM now() - oldest)))::int::text;
    END IF;
  END IF;
  RETURN NEW;
END
$fn$
"""

SUBMIT_FUNCTION = """
CREATE FUNCTION liftoff.submit_generation(
  p_claims text, p_tenant_claim text, p_provision boolean, p_org uuid, p_member uuid,
  p_prompt text, p_model text, p_params jsonb, p_key text, p_hash text
) RETURNS TABLE (
  created boolean, id uuid, status text, prompt text, model text, params jsonb, result jsonb,
  error text, attempts int, cancel_requested boolean, created_at timestamptz,
  updated_at timestamptz, started_at timestamptz, finished_at timestamptz, request_hash text
) LANGUAGE plpgsql
SET search_path = pg_catalog, public AS $fn$
#variable_conflict use_column
BEGIN
  IF p_provision THEN
    -- With the caller's own privileges, before it becomes the tenant.
    INSERT INTO organizations AS o (id) VALUES (p_org) ON CONFLICT DO NOTHING;
    INSERT INTO organization_members AS m (organization_id, user_id) VALUES (p_org, p_member)
    ON CONFLICT DO NOTHING;
  END IF;
  -- Transaction-local, as SET LOCAL: the statement's implicit transaction ends with it.
  PERFORM set_config('request.jwt.claims', p_claims, true),
          set_config('liftoff.tenant_claim', p_tenant_claim, true),
          set_config('role', 'authenticated', true);
  RETURN QUERY
    INSERT INTO generations AS g
      (organization_id, created_by, prompt, model, params, idempotency_key, request_hash)
    VALUES (p_org, p_member, p_prompt, p_model, p_params, p_key, p_hash)
    ON CONFLICT (organization_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING true, g.id, g.ai_status, g.prompt, g.model, g.params, g.result, g.error, g.attempts,
              g.cancel_requested, g.created_at, g.updated_at, g.started_at, g.finished_at,
              g.request_hash;
  IF NOT FOUND THEN
    -- The key was used before (perhaps by a request that committed a moment ago): that job.
    RETURN QUERY
      SELECT false, g.id, g.ai_status, g.prompt, g.model, g.params, g.result, g.error, g.attempts,
             g.cancel_requested, g.created_at, g.updated_at, g.started_at, g.finished_at,
             g.request_hash
      FROM generations g
      WHERE g.organization_id = p_org AND g.idempotency_key = p_key;
  END IF;
END
$fn$
"""


def upgrade() -> None:
    _grants()
    op.execute(CANCEL_TRIGGER)
    op.execute(
        "CREATE TRIGGER generations_cancel_requested BEFORE UPDATE OF cancel_requested ON generations"
        " FOR EACH ROW WHEN (NEW.cancel_requested AND NOT OLD.cancel_requested)"
        " EXECUTE FUNCTION liftoff.on_cancel_requested()"
    )
    _limits()
    op.execute(SUBMIT_FUNCTION)
    # Functions are executable by PUBLIC by default; this one takes claims on trust.
    op.execute(f"REVOKE ALL ON FUNCTION {SUBMIT_SIGNATURE} FROM PUBLIC, anon, authenticated")


def _grants() -> None:
    for table in TABLES:
        op.execute(f"REVOKE ALL ON {table} FROM anon, authenticated")
    op.execute(f"GRANT SELECT ON {', '.join(TABLES)} TO authenticated")
    op.execute(f"GRANT INSERT ({TENANT_INSERT_COLUMNS}) ON generations TO authenticated")
    op.execute("GRANT UPDATE (cancel_requested) ON generations TO authenticated")
    # Column privileges already keep worker state out of reach; the policies say it again.
    op.execute("DROP POLICY generations_insert ON generations")
    op.execute(
        "CREATE POLICY generations_insert ON generations FOR INSERT TO authenticated"
        f" WITH CHECK (organization_id = {ORG} AND created_by = {UID} AND ai_status = 'queued'"
        " AND attempts = 0 AND result IS NULL AND error IS NULL AND NOT cancel_requested"
        " AND lease_expires_at IS NULL AND leased_by IS NULL AND started_at IS NULL"
        " AND finished_at IS NULL)"
    )
    op.execute("DROP POLICY generations_update ON generations")
    op.execute(
        "CREATE POLICY generations_update ON generations FOR UPDATE TO authenticated"
        f" USING (organization_id = {ORG}) WITH CHECK (organization_id = {ORG} AND cancel_requested)"
    )


def _limits() -> None:
    op.execute(
        "CREATE FUNCTION liftoff.default_limits_id() RETURNS uuid LANGUAGE sql IMMUTABLE"
        f" AS $$ SELECT '{DEFAULTS}'::uuid $$"
    )
    op.execute(
        """
        CREATE TABLE liftoff.tenant_limits (
          organization_id uuid PRIMARY KEY,
          max_active_jobs int CHECK (max_active_jobs > 0),
          max_submissions_per_minute int CHECK (max_submissions_per_minute > 0),
          updated_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute(
        "COMMENT ON TABLE liftoff.tenant_limits IS 'Per-organization submission limits; the row of the"
        f" nil uuid {DEFAULTS} holds the defaults (`python -m app migrate` writes it from the settings);"
        " NULL is no limit.'"
    )
    op.execute("ALTER TABLE liftoff.tenant_limits ENABLE ROW LEVEL SECURITY")
    op.execute("REVOKE ALL ON liftoff.tenant_limits FROM PUBLIC, anon, authenticated")
    op.execute("GRANT SELECT ON liftoff.tenant_limits TO authenticated")
    op.execute("GRANT ALL ON liftoff.tenant_limits TO service_role")
    op.execute(
        "CREATE POLICY tenant_limits_select ON liftoff.tenant_limits FOR SELECT TO authenticated"
        f" USING (organization_id IN ({ORG}, '{DEFAULTS}'))"
    )
    op.execute(
        "INSERT INTO liftoff.tenant_limits (organization_id, max_active_jobs, max_submissions_per_minute)"
        " VALUES (liftoff.default_limits_id(), 100, 300)"
    )
    op.execute(LIMIT_TRIGGER)
    op.execute(
        "CREATE TRIGGER generations_tenant_limits BEFORE INSERT ON generations"
        " FOR EACH ROW EXECUTE FUNCTION liftoff.enforce_tenant_limits()"
    )


def downgrade() -> None:
    op.execute(f"DROP FUNCTION {SUBMIT_SIGNATURE}")
    op.execute("DROP TRIGGER generations_tenant_limits ON generations")
    op.execute("DROP FUNCTION liftoff.enforce_tenant_limits()")
    op.execute("DROP TABLE liftoff.tenant_limits")
    op.execute("DROP FUNCTION liftoff.default_limits_id()")
    op.execute("DROP TRIGGER generations_cancel_requested ON generations")
    op.execute("DROP FUNCTION liftoff.on_cancel_requested()")
    # Back to revision 0002's privileges and policies.
    op.execute("DROP POLICY generations_update ON generations")
    op.execute(
        "CREATE POLICY generations_update ON generations FOR UPDATE TO authenticated"
        f" USING (organization_id = {ORG}) WITH CHECK (organization_id = {ORG})"
    )
    op.execute("DROP POLICY generations_insert ON generations")
    op.execute(
        "CREATE POLICY generations_insert ON generations FOR INSERT TO authenticated"
        f" WITH CHECK (organization_id = {ORG} AND created_by = {UID})"
    )
    op.execute("REVOKE ALL ON generations FROM authenticated")
    op.execute("GRANT SELECT, INSERT ON generations TO authenticated")
    op.execute(
        "GRANT UPDATE (ai_status, cancel_requested, updated_at, finished_at) ON generations TO authenticated"
    )
