-- Tenant context for row-level security.
--
-- The worker (millrace_writer) sets `app.current_tenant_id` per transaction with a bound parameter:
--   SELECT set_config('app.current_tenant_id', $1, true)
-- Analysts do not choose their tenant: each per-tenant analyst role is mapped to one tenant in
-- millrace.analyst_roles, and the mapping wins over any setting the analyst makes.
-- A missing, empty or malformed setting yields NULL, so the policies match no rows (never an error).

CREATE TABLE IF NOT EXISTS millrace.analyst_roles (
  role_name  name PRIMARY KEY,
  tenant_id  uuid NOT NULL REFERENCES tenants (tenant_id) ON DELETE CASCADE,
  created_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE millrace.analyst_roles OWNER TO millrace_owner;
ALTER TABLE millrace.analyst_roles ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS own_mapping ON millrace.analyst_roles;
CREATE POLICY own_mapping ON millrace.analyst_roles FOR SELECT USING (role_name = current_user);
GRANT SELECT ON millrace.analyst_roles TO millrace_analyst, millrace_writer;

CREATE OR REPLACE FUNCTION millrace.current_tenant_id() RETURNS uuid
LANGUAGE sql STABLE PARALLEL SAFE AS $$
  SELECT CASE WHEN s ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN s::uuid END
  FROM (SELECT current_setting('app.current_tenant_id', true) AS s) AS setting
$$;

-- The tenant whose rows the current role may see or write: an analyst's mapped tenant, otherwise
-- the transaction's app.current_tenant_id.
CREATE OR REPLACE FUNCTION millrace.visible_tenant_id() RETURNS uuid
LANGUAGE sql STABLE PARALLEL SAFE AS $$
  SELECT CASE
    WHEN pg_has_role(current_user, 'millrace_analyst', 'MEMBER')
      THEN (SELECT a.tenant_id FROM millrace.analyst_roles AS a WHERE a.role_name = current_user)
    ELSE millrace.current_tenant_id()
  END
$$;
ALTER FUNCTION millrace.current_tenant_id() OWNER TO millrace_owner;
ALTER FUNCTION millrace.visible_tenant_id() OWNER TO millrace_owner;
GRANT EXECUTE ON FUNCTION millrace.current_tenant_id(), millrace.visible_tenant_id() TO millrace_writer, millrace_analyst;

-- Map an existing role to a tenant as its analyst (the role itself is created by the operator or
-- `millrace tenants analyst`; identifiers are quoted with format('%I'), never concatenated).
CREATE OR REPLACE FUNCTION millrace.grant_analyst(p_role name, p_tenant uuid) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO millrace.analyst_roles (role_name, tenant_id) VALUES (p_role, p_tenant)
  ON CONFLICT (role_name) DO UPDATE SET tenant_id = EXCLUDED.tenant_id;
  EXECUTE format('GRANT millrace_analyst TO %I', p_role);
END
$$;
