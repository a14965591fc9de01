-- Attachments: one row per upload that passed validation. ``state``:
--   processing  the row exists before the objects are written (so a crash leaves a row that
--               names what to clean up, and a retry resumes under the same ids);
--   stored      the objects and the metadata are complete; the message may not exist yet;
--   linked      messaging has stored the message (message_seq).
-- A deleted message erases its row (and its objects): nothing of a redacted file remains.
CREATE TABLE attachments (
    id            uuid PRIMARY KEY,
    session_id    uuid        NOT NULL,
    uploader_id   text        NOT NULL,
    uploader_role text        NOT NULL,
    client_msg_id text        NOT NULL,
    message_id    uuid        NOT NULL UNIQUE,
    purpose       text        NOT NULL CHECK (purpose IN ('upload', 'voice')),
    state         text        NOT NULL CHECK (state IN ('processing', 'stored', 'linked')),
    sha256        text        NOT NULL,
    object_key    text        NOT NULL,
    thumbnail_key text,
    kind          text,
    content_type  text,
    filename      text,
    size          bigint,
    width         integer,
    height        integer,
    duration_ms   integer,
    waveform      jsonb,
    message_seq   integer,
    correlation_id text,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    CONSTRAINT attachments_idempotency UNIQUE (session_id, uploader_id, client_msg_id)
);
CREATE INDEX attachments_unfinished ON attachments (updated_at) WHERE state <> 'linked';

-- Media's own projection of session membership, from messaging's events. ``seq`` is the seq of
-- the event that last changed the pair (0 for session_created), so a redelivered older event
-- never undoes a newer one.
CREATE TABLE members (
    session_id uuid    NOT NULL,
    user_id    text    NOT NULL,
    present    boolean NOT NULL,
    seq        integer NOT NULL,
    PRIMARY KEY (session_id, user_id)
);

-- Events this service has applied (inbox de-duplication by message_id).
CREATE TABLE inbox (
    message_id   uuid PRIMARY KEY,
    processed_at timestamptz NOT NULL DEFAULT now()
);

-- Events to publish (audit facts), written in the same transaction as the change they record;
-- the relay publishes and deletes them.
CREATE TABLE outbox (
    position    bigserial PRIMARY KEY,
    routing_key text  NOT NULL,
    envelope    jsonb NOT NULL
);
