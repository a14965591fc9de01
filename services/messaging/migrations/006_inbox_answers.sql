-- The inbox answers a redelivered command as it was first answered (a broker redelivers a
-- command whose handler committed but died before its ack). ``answer`` holds ids and markers,
-- never message content: a message's text must be erasable, and messages are idempotent by
-- their client_msg_id instead (they have no inbox rows).
ALTER TABLE inbox ADD COLUMN answer jsonb;
