-- The event store: one stream per session. ``version`` is the session's seq (0 for
-- session_created); events outside the total order (receipts) have no version.
-- ``position`` is the global order the outbox relay tails. Appends take a transaction-level
-- advisory lock, so positions become visible in commit order and the relay can never skip one.
CREATE TABLE events (
    position       bigserial PRIMARY KEY,
    event_id       uuid        NOT NULL UNIQUE,
    stream_id      uuid        NOT NULL,
    version        integer,
    type           text        NOT NULL,
    schema_version integer     NOT NULL,
    payload        jsonb       NOT NULL,
    actor_id       text,
    actor_role     text,
    correlation_id text,
    causation_id   text,
    occurred_at    timestamptz NOT NULL,
    CONSTRAINT events_stream_version UNIQUE (stream_id, version)
);
CREATE INDEX events_stream ON events (stream_id, version);

-- How far the outbox relay has published (one row per relay name).
CREATE TABLE outbox_checkpoint (
    name     text PRIMARY KEY,
    position bigint NOT NULL
);
INSERT INTO outbox_checkpoint (name, position) VALUES ('events', 0);

-- Messages this service has already processed (inbox de-duplication by message_id).
CREATE TABLE inbox (
    message_id   uuid PRIMARY KEY,
    type         text        NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now()
);

-- ---- projections (rebuilt from events) ----

CREATE TABLE sessions (
    id               uuid PRIMARY KEY,
    title            text,
    created_by       text        NOT NULL,
    created_at       timestamptz NOT NULL,
    last_seq         integer     NOT NULL DEFAULT 0,
    last_message_seq integer,
    last_activity_at timestamptz NOT NULL
);
CREATE INDEX sessions_activity ON sessions (last_activity_at DESC, id DESC);

CREATE TABLE participants (
    session_id uuid NOT NULL REFERENCES sessions (id),
    user_id    text NOT NULL,
    role       text NOT NULL CHECK (role IN ('owner', 'member')),
    added_at   timestamptz NOT NULL,
    PRIMARY KEY (session_id, user_id)
);
CREATE INDEX participants_user ON participants (user_id, session_id);

CREATE TABLE messages (
    id            uuid PRIMARY KEY,
    session_id    uuid        NOT NULL REFERENCES sessions (id),
    seq           integer     NOT NULL,
    sender_id     text        NOT NULL,
    kind          text        NOT NULL,
    body          text,
    client_msg_id text,
    created_at    timestamptz NOT NULL,
    deleted       boolean     NOT NULL DEFAULT false,
    attachment    jsonb,
    CONSTRAINT messages_session_seq UNIQUE (session_id, seq),
    CONSTRAINT messages_idempotency UNIQUE (session_id, sender_id, client_msg_id)
);

CREATE TABLE receipts (
    session_id    uuid    NOT NULL REFERENCES sessions (id),
    user_id       text    NOT NULL,
    delivered_seq integer NOT NULL DEFAULT 0,
    read_seq      integer NOT NULL DEFAULT 0,
    PRIMARY KEY (session_id, user_id)
);
