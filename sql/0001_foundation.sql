-- Businesses, users, memberships, sessions, API keys and the audit log.

CREATE TABLE businesses (
    id          uuid PRIMARY KEY,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE users (
    id             uuid PRIMARY KEY,
    email          text NOT NULL,
    password_hash  text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
-- Emails compare case-insensitively; the stored form is already lower-cased.
CREATE UNIQUE INDEX users_email_key ON users (lower(email));

-- role must match shared.models.Role
CREATE TABLE memberships (
    user_id      uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    business_id  uuid NOT NULL REFERENCES businesses (id) ON DELETE CASCADE,
    role         text NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, business_id)
);
CREATE INDEX memberships_business_idx ON memberships (business_id);

-- Server-side sessions: the cookie carries a random token; only its SHA-256 is stored.
CREATE TABLE sessions (
    token_hash  bytea PRIMARY KEY,
    user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    csrf_token  text NOT NULL,
    ip          text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);
CREATE INDEX sessions_user_idx ON sessions (user_id);
CREATE INDEX sessions_expires_idx ON sessions (expires_at);

-- API keys: only HMAC-SHA256(KAIHOOKS_SECRET_KEY, key) is kept, with what the dashboard displays.
-- scopes must match shared.apikeys.SCOPES
CREATE TABLE api_keys (
    id              uuid PRIMARY KEY,
    business_id     uuid NOT NULL REFERENCES businesses (id) ON DELETE CASCADE,
    name            text NOT NULL,
    key_hash        bytea NOT NULL UNIQUE,
    display_prefix  text NOT NULL,
    last4           text NOT NULL,
    scopes          text[] NOT NULL,
    created_by      uuid REFERENCES users (id) ON DELETE SET NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz,
    last_used_at    timestamptz
);
CREATE INDEX api_keys_business_idx ON api_keys (business_id, created_at DESC, id DESC);

-- Who did what, when and from where. Rows are never updated.
CREATE TABLE audit_log (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    business_id    uuid REFERENCES businesses (id) ON DELETE CASCADE,
    actor_user_id  uuid REFERENCES users (id) ON DELETE SET NULL,
    actor_key_id   uuid,
    action         text NOT NULL,
    target_id      text,
    ip             text,
    details        jsonb NOT NULL DEFAULT '{}',
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_log_business_idx ON audit_log (business_id, created_at DESC);
