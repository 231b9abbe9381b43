-- Operational notices a business should see about its endpoints (shown on the endpoint object).
-- kind must match shared.repos.notices.Kind; each kind is also the name of the operational
-- webhook (e.g. endpoint.disabled) that may later be sent to a business-chosen URL.
CREATE TABLE notices (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    business_id  uuid NOT NULL REFERENCES businesses (id) ON DELETE CASCADE,
    endpoint_id  uuid NOT NULL REFERENCES endpoints (id) ON DELETE CASCADE,
    kind         text NOT NULL CHECK (kind IN ('endpoint.disabled', 'delivery.exhausted')),
    message      text NOT NULL,
    details      jsonb NOT NULL DEFAULT '{}',
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX notices_endpoint ON notices (endpoint_id, created_at DESC);
