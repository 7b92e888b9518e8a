-- Equipment quotas, threshold rules, alarm state, alert events (with their outbox) and webhooks.
-- Semantics: docs/alerts.md. Tenant tables have row-level security with the same policy text as
-- sensor_data_raw; millrace.* tables are the pipeline's own bookkeeping (read across tenants by
-- the worker, never granted to analysts).

-- A deterministic alert id: SHA-256 of a name, laid out as an RFC 9562 version-8 UUID. The TypeScript
-- twin is alertUuid() in pipelines/processors/thresholds.ts (an integration test keeps them equal).
CREATE OR REPLACE FUNCTION millrace.alert_uuid(p_name text) RETURNS uuid
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
  SELECT encode(set_byte(set_byte(d, 6, (get_byte(d, 6) & 15) | 128), 8, (get_byte(d, 8) & 63) | 128), 'hex')::uuid
  FROM (SELECT substring(sha256(convert_to(p_name, 'UTF8')) FROM 1 FOR 16) AS d) AS h
$$;
ALTER FUNCTION millrace.alert_uuid(text) OWNER TO millrace_owner;
GRANT EXECUTE ON FUNCTION millrace.alert_uuid(text) TO millrace_writer;

-- ---------------------------------------------------------------------------------------------
-- Equipment quota: a row per registered (admitted) equipment. Rows are added only by
-- millrace.admit_equipment, which serialises admissions per tenant, so the count never exceeds
-- tenants.max_equipment whatever the number of replicas.
CREATE TABLE IF NOT EXISTS tenant_equipment (
  tenant_id     uuid NOT NULL REFERENCES tenants (tenant_id) ON DELETE CASCADE,
  equipment_id  text NOT NULL,
  registered_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, equipment_id)
);
ALTER TABLE tenant_equipment OWNER TO millrace_owner;
ALTER TABLE tenant_equipment ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON tenant_equipment;
CREATE POLICY tenant_isolation ON tenant_equipment
  USING (tenant_id = (SELECT millrace.visible_tenant_id()))
  WITH CHECK (tenant_id = (SELECT millrace.visible_tenant_id()));
-- The writer reads (under RLS) but never inserts directly: admission goes through the function.
GRANT SELECT ON tenant_equipment TO millrace_writer, millrace_analyst;

-- The 80 % warning, raised once per (tenant, limit): a new limit re-arms it.
CREATE TABLE IF NOT EXISTS millrace.quota_warnings (
  tenant_id     uuid    NOT NULL REFERENCES tenants (tenant_id) ON DELETE CASCADE,
  max_equipment integer NOT NULL,
  registered    integer NOT NULL,
  raised_at     timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, max_equipment)
);
ALTER TABLE millrace.quota_warnings OWNER TO millrace_owner;
GRANT SELECT ON millrace.quota_warnings TO millrace_writer;

-- ---------------------------------------------------------------------------------------------
-- Alert events: every lifecycle step of every alarm, exactly once (PK alert_id + seq: a replayed
-- batch inserts nothing). `seq` numbers the steps of one alarm from 1 (raised).
CREATE TABLE IF NOT EXISTS alerts (
  alert_id          uuid    NOT NULL,
  seq               integer NOT NULL CHECK (seq >= 1),
  tenant_id         uuid    NOT NULL REFERENCES tenants (tenant_id) ON DELETE CASCADE,
  kind              text    NOT NULL CHECK (kind IN ('threshold', 'quota')),
  step              text    NOT NULL CHECK (step IN ('raised', 'escalated', 'de_escalated', 'cleared')),
  severity          text    NOT NULL CHECK (severity IN ('warning', 'major', 'critical')),
  previous_severity text    CHECK (previous_severity IN ('warning', 'major', 'critical')),
  event_time        timestamptz NOT NULL,
  rule_id           text,
  rule_name         text,
  measure           text,
  comparison        text,
  threshold         double precision,
  equipment_id      text,
  facility_id       text,
  value             double precision,
  reason            text,
  created_at        timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (alert_id, seq)
);
CREATE INDEX IF NOT EXISTS alerts_tenant_time ON alerts (tenant_id, event_time);
ALTER TABLE alerts OWNER TO millrace_owner;
ALTER TABLE alerts ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON alerts;
CREATE POLICY tenant_isolation ON alerts
  USING (tenant_id = (SELECT millrace.visible_tenant_id()))
  WITH CHECK (tenant_id = (SELECT millrace.visible_tenant_id()));
GRANT SELECT, INSERT ON alerts TO millrace_writer;
GRANT SELECT ON alerts TO millrace_analyst;

-- The outbox the alert publisher sends to alerts-{tenant_id}: the event exactly as the Avro record
-- (schemas/alert-event.avsc) in JSON, written in the same transaction as the alerts row.
CREATE TABLE IF NOT EXISTS millrace.alerts_outbox (
  alert_id     uuid    NOT NULL,
  seq          integer NOT NULL,
  tenant_id    uuid    NOT NULL,
  event        jsonb   NOT NULL,
  created_at   timestamptz NOT NULL DEFAULT now(),
  published_at timestamptz,
  -- Set when the event cannot be encoded (a bug, never a transient failure): the row is kept for
  -- inspection and skipped, so it cannot block the events behind it.
  publish_error text,
  PRIMARY KEY (alert_id, seq)
);
CREATE INDEX IF NOT EXISTS alerts_outbox_unpublished ON millrace.alerts_outbox (created_at, alert_id, seq) WHERE published_at IS NULL AND publish_error IS NULL;
ALTER TABLE millrace.alerts_outbox OWNER TO millrace_owner;
GRANT SELECT, INSERT, UPDATE ON millrace.alerts_outbox TO millrace_writer;

-- ---------------------------------------------------------------------------------------------
-- Per-tenant threshold rules: overrides of (or additions to) the defaults in topology.yaml, managed
-- with `millrace rules`. `definition` is the rule in topology.yaml form; an override with the id of
-- a default replaces it ({"enabled": false} switches it off for the tenant).
CREATE TABLE IF NOT EXISTS threshold_rules (
  tenant_id  uuid NOT NULL REFERENCES tenants (tenant_id) ON DELETE CASCADE,
  rule_id    text NOT NULL CHECK (rule_id ~ '^[a-z][a-z0-9_]{0,62}$'),
  definition jsonb NOT NULL CHECK (jsonb_typeof(definition) = 'object'),
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, rule_id)
);
ALTER TABLE threshold_rules OWNER TO millrace_owner;
ALTER TABLE threshold_rules ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON threshold_rules;
CREATE POLICY tenant_isolation ON threshold_rules
  USING (tenant_id = (SELECT millrace.visible_tenant_id()))
  WITH CHECK (tenant_id = (SELECT millrace.visible_tenant_id()));
GRANT SELECT, INSERT, UPDATE, DELETE ON threshold_rules TO millrace_writer;
GRANT SELECT ON threshold_rules TO millrace_analyst;

-- Alarm state per (tenant, equipment, rule): the open alarm, if any, and the evaluator's event-time
-- timers, written in the sink's batch transaction (with the rows and the partition offset), so a
-- restart or a partition moving to another replica continues from exactly the committed state.
CREATE TABLE IF NOT EXISTS alarms (
  tenant_id    uuid NOT NULL REFERENCES tenants (tenant_id) ON DELETE CASCADE,
  equipment_id text NOT NULL,
  rule_id      text NOT NULL,
  -- The open alarm (all NULL when none is open).
  alert_id     uuid,
  severity     text CHECK (severity IN ('warning', 'major', 'critical')),
  seq          integer,
  raised_at    timestamptz,
  changed_at   timestamptz,
  -- Newest reading time this rule evaluated for the equipment (the late-reading policy).
  last_time    timestamptz,
  -- The rest of the evaluator's state (pipelines/processors/alarm-store.ts): sustain timers in
  -- event time (epoch ms) and the open alarm's rule as of its last step:
  -- {"since": {"warning": ms, ...}, "release_since": ms | null, "rule": {...} | null}.
  evaluator    jsonb NOT NULL DEFAULT '{}'::jsonb,
  updated_at   timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, equipment_id, rule_id),
  CHECK ((alert_id IS NULL) = (severity IS NULL) AND (alert_id IS NULL) = (seq IS NULL))
);
CREATE INDEX IF NOT EXISTS alarms_open ON alarms (tenant_id, severity) WHERE alert_id IS NOT NULL;
ALTER TABLE alarms OWNER TO millrace_owner;
ALTER TABLE alarms ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON alarms;
CREATE POLICY tenant_isolation ON alarms
  USING (tenant_id = (SELECT millrace.visible_tenant_id()))
  WITH CHECK (tenant_id = (SELECT millrace.visible_tenant_id()));
GRANT SELECT, INSERT, UPDATE ON alarms TO millrace_writer;
GRANT SELECT ON alarms TO millrace_analyst;

-- ---------------------------------------------------------------------------------------------
-- Optional per-tenant webhook for alert events. The signing secret is a reference: the name of an
-- environment variable the worker reads (never the secret itself).
CREATE TABLE IF NOT EXISTS millrace.tenant_webhooks (
  tenant_id    uuid PRIMARY KEY REFERENCES tenants (tenant_id) ON DELETE CASCADE,
  url          text NOT NULL CHECK (url ~ '^https?://'),
  secret_env   text CHECK (secret_env ~ '^[A-Z_][A-Z0-9_]*$'),
  min_severity text NOT NULL DEFAULT 'warning' CHECK (min_severity IN ('warning', 'major', 'critical')),
  enabled      boolean NOT NULL DEFAULT true,
  updated_at   timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE millrace.tenant_webhooks OWNER TO millrace_owner;
GRANT SELECT ON millrace.tenant_webhooks TO millrace_writer;

-- ---------------------------------------------------------------------------------------------
-- Admission: register the equipment of p_equipment that is new, as long as the tenant has room.
-- Serialised per tenant by a transaction-level advisory lock, then counted: two replicas admitting
-- at the same time queue on the lock, and the second sees the first's rows, so the registered
-- count never exceeds max_equipment (read here, from tenants, not from any cache). New equipment
-- is admitted in the order given (the caller passes it in reading order). Returns one row per
-- distinct input id. At p_warn_percent of the limit it records the warning once per (tenant, limit)
-- and writes its alert event (alerts + outbox) in the same transaction; warning_raised is true for
-- exactly that one call.
--
-- Runs as its owner (the writer has no INSERT on tenant_equipment); if the caller has set a tenant
-- context it must be this tenant.
CREATE OR REPLACE FUNCTION millrace.admit_equipment(p_tenant uuid, p_equipment text[], p_warn_percent integer DEFAULT 80)
RETURNS TABLE (equipment_id text, admitted boolean, registered integer, max_equipment integer, warning_raised boolean)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
#variable_conflict use_column
DECLARE
  v_ctx     uuid := millrace.current_tenant_id();
  v_max     integer;
  v_count   integer;
  v_added   integer;
  v_warn    boolean := false;
  v_alert   uuid;
  v_event   jsonb;
BEGIN
  IF p_tenant IS NULL THEN
    RAISE EXCEPTION 'admit_equipment: tenant is NULL' USING ERRCODE = '22004';
  END IF;
  IF v_ctx IS NOT NULL AND v_ctx <> p_tenant THEN
    RAISE EXCEPTION 'admit_equipment: tenant context is %, not %', v_ctx, p_tenant USING ERRCODE = '42501';
  END IF;
  IF p_warn_percent IS NULL OR p_warn_percent < 1 OR p_warn_percent > 100 THEN
    RAISE EXCEPTION 'admit_equipment: p_warn_percent must be 1..100, got %', p_warn_percent USING ERRCODE = '22023';
  END IF;
  -- 0x71756f74 = 'quot': the class of millrace's quota locks; the second key is the tenant.
  PERFORM pg_advisory_xact_lock(1903521652, hashtext(p_tenant::text));

  SELECT t.max_equipment INTO v_max FROM tenants AS t WHERE t.tenant_id = p_tenant AND t.status = 'active';
  IF v_max IS NULL THEN
    -- Unknown, suspended or deleted tenant: nothing is admitted (validation rejects these first).
    RETURN QUERY SELECT DISTINCT u.e, false, 0, 0, false FROM unnest(p_equipment) AS u(e);
    RETURN;
  END IF;

  SELECT count(*)::integer INTO v_count FROM tenant_equipment AS te WHERE te.tenant_id = p_tenant;

  INSERT INTO tenant_equipment (tenant_id, equipment_id)
  SELECT p_tenant, n.e
  FROM (
    SELECT w.e, w.ord
    FROM (SELECT u.e, min(u.ord) AS ord FROM unnest(p_equipment) WITH ORDINALITY AS u(e, ord) WHERE u.e IS NOT NULL GROUP BY u.e) AS w
    WHERE NOT EXISTS (SELECT 1 FROM tenant_equipment AS te WHERE te.tenant_id = p_tenant AND te.equipment_id = w.e)
    ORDER BY w.ord
    LIMIT greatest(v_max - v_count, 0)
  ) AS n;
  GET DIAGNOSTICS v_added = ROW_COUNT;
  v_count := v_count + v_added;

  IF v_max > 0 AND v_count::bigint * 100 >= v_max::bigint * p_warn_percent THEN
    INSERT INTO millrace.quota_warnings (tenant_id, max_equipment, registered) VALUES (p_tenant, v_max, v_count)
    ON CONFLICT DO NOTHING;
    IF FOUND THEN
      v_warn := true;
      v_alert := millrace.alert_uuid(format('quota/%s/%s', p_tenant, v_max));
      -- The AlertEvent record (schemas/alert-event.avsc) as JSON: unions are plain values or null.
      v_event := jsonb_build_object(
        'event_id', format('%s/1', v_alert),
        'alert_id', v_alert::text,
        'seq', 1,
        'kind', 'quota',
        'step', 'raised',
        'severity', 'warning',
        'previous_severity', NULL,
        'tenant_id', p_tenant::text,
        'time', (extract(epoch FROM date_trunc('milliseconds', now())) * 1000)::bigint,
        'rule', NULL,
        'reading', NULL,
        'quota', jsonb_build_object('registered', v_count, 'max_equipment', v_max, 'warn_percent', p_warn_percent),
        'reason', 'equipment_quota_warning');
      INSERT INTO alerts (alert_id, seq, tenant_id, kind, step, severity, event_time, reason)
      VALUES (v_alert, 1, p_tenant, 'quota', 'raised', 'warning', date_trunc('milliseconds', now()), 'equipment_quota_warning')
      ON CONFLICT DO NOTHING;
      INSERT INTO millrace.alerts_outbox (alert_id, seq, tenant_id, event) VALUES (v_alert, 1, p_tenant, v_event)
      ON CONFLICT DO NOTHING;
    END IF;
  END IF;

  RETURN QUERY
  SELECT w.e,
         EXISTS (SELECT 1 FROM tenant_equipment AS te WHERE te.tenant_id = p_tenant AND te.equipment_id = w.e),
         v_count, v_max, v_warn
  FROM (SELECT DISTINCT u.e FROM unnest(p_equipment) AS u(e) WHERE u.e IS NOT NULL) AS w;
END
$$;
ALTER FUNCTION millrace.admit_equipment(uuid, text[], integer) OWNER TO millrace_owner;
REVOKE ALL ON FUNCTION millrace.admit_equipment(uuid, text[], integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION millrace.admit_equipment(uuid, text[], integer) TO millrace_writer;
