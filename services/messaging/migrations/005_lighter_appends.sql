-- Every chat message writes an event row and a message row; each index and each foreign-key
-- check on them is paid once per message.
-- * Nothing looks an event up by its id (it is the id of the event's broker envelope, random,
--   and consumers de-duplicate by it), so it needs no unique index.
-- * The projections are written only by ``projections.py``, in the transaction of the events
--   they project, and a session's stream starts with ``session_created``, which creates the
--   session row; a message or receipt row without its session cannot arise, and the check per
--   row (a trigger and a lookup of the session) buys nothing. ``participants`` keeps its key:
--   it is written once per member, not per message.
ALTER TABLE events DROP CONSTRAINT IF EXISTS events_event_id_key;
ALTER TABLE messages DROP CONSTRAINT IF EXISTS messages_session_id_fkey;
ALTER TABLE receipts DROP CONSTRAINT IF EXISTS receipts_session_id_fkey;
