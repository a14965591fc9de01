-- An optimistic append states the seq it expects each of its sessions to be at. If one has
-- moved on (another writer came first, or the batch it continued was refused), the append
-- calls this, which aborts the whole statement; the writer then redoes the batch under the
-- append lock with fresh reads.
CREATE FUNCTION append_refused(reason text) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'append refused: %', reason USING ERRCODE = 'serialization_failure';
END
$$;
