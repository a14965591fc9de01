-- Users to tell about an event beyond the session's joined sockets (notifications, a newly
-- added or removed participant). Routing metadata for the relay, never shown to clients.
ALTER TABLE events ADD COLUMN recipients text[];
