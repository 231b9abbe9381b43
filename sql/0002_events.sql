-- Events as published, and the agents, calls and leads they carry (projections).

CREATE TABLE events (
    id               uuid PRIMARY KEY,              -- UUIDv7: also the order of acceptance
    business_id      uuid NOT NULL REFERENCES businesses (id) ON DELETE CASCADE,
    type             text NOT NULL,                 -- shared/events.py (the publishable types and the test type)
    data             jsonb NOT NULL,
    idempotency_key  text,
    occurred_at      timestamptz NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    -- NULL until the dispatcher has created this event's deliveries. An event left
    -- NULL (Redis was down at publish, a worker died) is picked up by the sweeper.
    fanned_out_at    timestamptz
);
CREATE UNIQUE INDEX events_idempotency_key ON events (business_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX events_business_list ON events (business_id, created_at DESC, id DESC);
CREATE INDEX events_business_type_list ON events (business_id, type, created_at DESC, id DESC);
CREATE INDEX events_not_fanned_out ON events (created_at) WHERE fanned_out_at IS NULL;

-- One row per agent/call/lead: the newest published state, by (version_at, version_event).
-- version_at is the event's occurred_at; equal times are ordered by event id (publish order).
-- body is the entity's data exactly as the read routes serve it (JSON text, never re-rendered).
CREATE TABLE agents (
    business_id    uuid NOT NULL REFERENCES businesses (id) ON DELETE CASCADE,
    id             text NOT NULL,
    body           text NOT NULL,
    deleted        boolean NOT NULL DEFAULT false,
    version_at     timestamptz NOT NULL,
    version_event  uuid NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (business_id, id)
);
CREATE INDEX agents_list ON agents (business_id, created_at DESC, id DESC) WHERE NOT deleted;

CREATE TABLE calls (
    business_id    uuid NOT NULL REFERENCES businesses (id) ON DELETE CASCADE,
    id             text NOT NULL,
    body           text NOT NULL,
    status         text NOT NULL,
    agent_id       text,
    started_at     timestamptz NOT NULL,
    version_at     timestamptz NOT NULL,
    version_event  uuid NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (business_id, id)
);
CREATE INDEX calls_list ON calls (business_id, created_at DESC, id DESC);
CREATE INDEX calls_by_agent ON calls (business_id, agent_id, created_at DESC, id DESC);
CREATE INDEX calls_by_status ON calls (business_id, status, created_at DESC, id DESC);

CREATE TABLE leads (
    business_id    uuid NOT NULL REFERENCES businesses (id) ON DELETE CASCADE,
    id             text NOT NULL,
    body           text NOT NULL,
    version_at     timestamptz NOT NULL,
    version_event  uuid NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (business_id, id)
);
CREATE INDEX leads_list ON leads (business_id, created_at DESC, id DESC);
