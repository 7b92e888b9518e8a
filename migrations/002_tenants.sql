-- Tenants. Secrets are never stored here: storage settings name references (environment variable
-- names or secret-manager paths) that the worker resolves at run time.
CREATE TABLE IF NOT EXISTS tenants (
  tenant_id               uuid PRIMARY KEY,
  tenant_name             text NOT NULL,
  deployment_type         text NOT NULL CHECK (deployment_type IN ('multi-tenant', 'single-tenant', 'hybrid')),
  data_region             text NOT NULL DEFAULT 'local',
  -- NULL means unlimited retention (enterprise tier).
  retention_policy_days   integer DEFAULT 30 CHECK (retention_policy_days IS NULL OR retention_policy_days > 0),
  max_equipment           integer NOT NULL DEFAULT 100 CHECK (max_equipment >= 0),
  created_at              timestamptz NOT NULL DEFAULT now(),
  subscription_tier       text NOT NULL DEFAULT 'basic' CHECK (subscription_tier IN ('basic', 'professional', 'enterprise')),
  compliance_requirements jsonb NOT NULL DEFAULT '{}'::jsonb,
  status                  text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended', 'deleted')),
  -- Where the tenant's rows live: 'shared' (this database, row-level security) or 'dedicated'
  -- (database_ref names a connection reference, e.g. {"env": "MILLRACE_TENANT_ACME_PG_URL"}).
  database_mode           text NOT NULL DEFAULT 'shared' CHECK (database_mode IN ('shared', 'dedicated')),
  database_ref            jsonb,
  -- Where the tenant's Parquet files live: 'shared' (shared bucket, tenant prefix) or 'dedicated'.
  storage_mode            text NOT NULL DEFAULT 'shared' CHECK (storage_mode IN ('shared', 'dedicated')),
  storage_bucket          text,
  storage_ref             jsonb,
  kms_key_id              text,
  updated_at              timestamptz NOT NULL DEFAULT now(),
  CHECK (database_mode = 'shared' OR database_ref IS NOT NULL),
  CHECK (storage_mode = 'shared' OR storage_bucket IS NOT NULL)
);
ALTER TABLE tenants OWNER TO millrace_owner;
GRANT SELECT ON tenants TO millrace_writer;
