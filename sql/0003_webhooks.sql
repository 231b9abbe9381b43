-- Webhook endpoints, their signing secrets, deliveries and the attempt log.

-- A UUIDv7 made in SQL (48 bits of milliseconds, then random), for rows created by
-- INSERT ... SELECT in bulk. The same layout as shared.ids.new_uuid.
CREATE FUNCTION kaihooks_uuid7() RETURNS uuid LANGUAGE sql VOLATILE AS $$
    SELECT encode(
        set_bit(set_bit(
            overlay(uuid_send(gen_random_uuid())
                    PLACING substring(int8send(floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
                    FROM 1 FOR 6),
            52, 1), 53, 1),
        'hex')::uuid
$$;

CREATE TABLE endpoints (
    id               uuid PRIMARY KEY,
    business_id      uuid NOT NULL REFERENCES businesses (id) ON DELETE CASCADE,
    url              text NOT NULL,
    description      text NOT NULL DEFAULT '',
    event_types      text[],                    -- NULL: every type
    enabled          boolean NOT NULL DEFAULT true,
    disabled_reason  text,
    -- Set at the first failed attempt since the last success; NULL while healthy.
    failing_since    timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX endpoints_business_list ON endpoints (business_id, created_at DESC, id DESC);
CREATE INDEX endpoints_failing ON endpoints (failing_since) WHERE failing_since IS NOT NULL AND enabled;

-- Signing secrets, sealed with AES-GCM under the master key named by key_id.
-- The current secret has expires_at NULL; rotated-out ones sign until expires_at.
CREATE TABLE endpoint_secrets (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    endpoint_id  uuid NOT NULL REFERENCES endpoints (id) ON DELETE CASCADE,
    key_id       text NOT NULL,
    nonce        bytea NOT NULL,
    ciphertext   bytea NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz
);
CREATE INDEX endpoint_secrets_endpoint ON endpoint_secrets (endpoint_id);
CREATE UNIQUE INDEX endpoint_secrets_one_current ON endpoint_secrets (endpoint_id) WHERE expires_at IS NULL;

-- status must match shared.models.DeliveryStatus; trigger (attempts) shared.models.Trigger
CREATE TABLE deliveries (
    id                    uuid PRIMARY KEY DEFAULT kaihooks_uuid7(),
    event_id              uuid NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    endpoint_id           uuid NOT NULL REFERENCES endpoints (id) ON DELETE CASCADE,
    business_id           uuid NOT NULL,
    event_type            text NOT NULL,
    status                text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'succeeded', 'failed')),
    attempt_count         integer NOT NULL DEFAULT 0,
    next_attempt_at       timestamptz,          -- when pending: the next attempt is due
    next_trigger          text NOT NULL DEFAULT 'scheduled',
    -- 'normal' follows KAIHOOKS_RETRY_SCHEDULE; 'replay' (after a retry or recover) a short one.
    schedule              text NOT NULL DEFAULT 'normal',
    schedule_start        integer NOT NULL DEFAULT 0,  -- attempt_count when the current schedule began
    last_response_status  integer,
    last_error            text,
    lease_until           timestamptz,          -- a worker holds it until then (renewed while it does)
    lease_owner           text,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    UNIQUE (event_id, endpoint_id)
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_endpoint_list ON deliveries (endpoint_id, created_at DESC, id DESC);
CREATE INDEX deliveries_business_recent ON deliveries (business_id, updated_at DESC);

CREATE TABLE attempts (
    delivery_id      uuid NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    endpoint_id      uuid NOT NULL,               -- denormalised: endpoint health reads by it
    number           integer NOT NULL,
    started_at       timestamptz NOT NULL,
    duration_ms      integer NOT NULL,
    response_status  integer,
    response_body    text,
    error            text,        -- a plain reason a person can act on
    error_kind       text,        -- a stable word: timeout, connection_refused, dns, tls, http_status, ...
    trigger          text NOT NULL CHECK (trigger IN ('scheduled', 'retry', 'recover', 'test')),
    url              text NOT NULL,
    PRIMARY KEY (delivery_id, number)
);
CREATE INDEX attempts_started ON attempts (started_at);
CREATE INDEX attempts_endpoint_recent ON attempts (endpoint_id, started_at DESC);
