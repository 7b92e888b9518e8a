-- Roles used by millrace. Group roles only (NOLOGIN): logins are granted membership by the operator
-- (or, on the local stack, the admin connection switches role with SET ROLE).
--   millrace_owner   owns every table and function; migrations run as (or SET ROLE to) it.
--   millrace_writer  the worker: stages rows with COPY and inserts them under row-level security.
--   millrace_analyst parent of the per-tenant analyst roles; sees only its tenant's rows.
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'millrace_owner') THEN
    CREATE ROLE millrace_owner NOLOGIN;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'millrace_writer') THEN
    CREATE ROLE millrace_writer NOLOGIN;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'millrace_analyst') THEN
    CREATE ROLE millrace_analyst NOLOGIN;
  END IF;
END
$$;

CREATE SCHEMA IF NOT EXISTS millrace AUTHORIZATION millrace_owner;
GRANT USAGE ON SCHEMA millrace TO millrace_writer, millrace_analyst;
-- The owner creates partitions at run time (PostgreSQL 15 no longer lets PUBLIC create in public).
GRANT USAGE, CREATE ON SCHEMA public TO millrace_owner;
