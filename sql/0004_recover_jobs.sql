-- Recover runs: a paced re-send of an endpoint's failed (and optionally missed) deliveries,
-- tracked so that it can be watched and cancelled.

-- status must match shared.models.RecoverStatus
CREATE TABLE recover_jobs (
    id              uuid PRIMARY KEY,
    business_id     uuid NOT NULL REFERENCES businesses (id) ON DELETE CASCADE,
    endpoint_id     uuid NOT NULL REFERENCES endpoints (id) ON DELETE CASCADE,
    since           timestamptz NOT NULL,
    until           timestamptz NOT NULL,
    include_missed  boolean NOT NULL,
    rate_per_s      real NOT NULL,
    total           integer NOT NULL,
    status          text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'cancelled', 'done')),
    actor           text NOT NULL,            -- who started it: usr_…, key_… or cli:<user>@<host>
    created_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz
);
CREATE INDEX recover_jobs_endpoint ON recover_jobs (endpoint_id, created_at DESC);

ALTER TABLE deliveries ADD COLUMN recover_job_id uuid REFERENCES recover_jobs (id) ON DELETE SET NULL;
CREATE INDEX deliveries_recover_job ON deliveries (recover_job_id) WHERE recover_job_id IS NOT NULL;
