-- The unique constraint events_stream_version already indexes (stream_id, version); a second
-- index on the same columns only made every append write one more index entry.
DROP INDEX IF EXISTS events_stream;
