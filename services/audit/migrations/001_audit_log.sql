-- The audit log: append-only and hash-chained (see services/audit/domain.py for the hash).
-- ``seq`` is the chain position (1, 2, 3, ... without gaps); appends are serialised by a
-- transaction-level advisory lock, so several replicas keep one linear chain.
-- ``source_event_id`` is the message id of the event or command the entry records: the unique
-- key makes a redelivered event take effect once.
CREATE TABLE audit_log (
    seq             bigint PRIMARY KEY CHECK (seq >= 1),
    id              uuid        NOT NULL UNIQUE,
    occurred_at     timestamptz NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    actor_id        text,
    actor_role      text,
    action          text        NOT NULL,
    session_id      uuid,
    target_id       text,
    request_id      text,
    outcome         text        NOT NULL,
    source_event_id uuid        NOT NULL,
    prev_hash       char(64)    NOT NULL,
    hash            char(64)    NOT NULL,
    CONSTRAINT audit_log_source_event UNIQUE (source_event_id)
);
CREATE INDEX audit_log_session ON audit_log (session_id, seq) WHERE session_id IS NOT NULL;
CREATE INDEX audit_log_actor ON audit_log (actor_id, seq) WHERE actor_id IS NOT NULL;
CREATE INDEX audit_log_action ON audit_log (action, seq);
CREATE INDEX audit_log_occurred ON audit_log (occurred_at);

-- Nobody edits or removes an entry, whatever their privileges (a superuser can still disable
-- the trigger: the hash chain is what detects that).
CREATE FUNCTION audit_log_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER audit_log_no_update_delete BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_refuse_change();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_refuse_change();

-- The role the service works as (it SETs ROLE to it on every connection): INSERT and SELECT on
-- the log, nothing else. Roles are global to the cluster, so this is idempotent, and safe when
-- several databases of one cluster migrate at once.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'chat_audit_writer') THEN
        CREATE ROLE chat_audit_writer NOLOGIN;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END $$;
-- The login user must be able to SET ROLE to it (a superuser always can; elsewhere the user
-- that migrates is the one the service logs in as, and needs CREATEROLE once).
DO $$
BEGIN
    IF NOT pg_has_role(current_user, 'chat_audit_writer', 'MEMBER') THEN
        EXECUTE format('GRANT chat_audit_writer TO %I', current_user);
    END IF;
END $$;
REVOKE ALL ON audit_log FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO chat_audit_writer;
GRANT SELECT, INSERT ON audit_log TO chat_audit_writer;
