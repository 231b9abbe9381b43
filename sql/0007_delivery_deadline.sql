-- The retry schedule is a deadline: a pending delivery is failed once deadline_at has passed (or its
-- attempts are spent), whatever its endpoint's breaker did meanwhile. Set when a schedule begins: at
-- fan-out (created_at + KAIHOOKS_RETRY_SCHEDULE's total), at a retry, recover or test send (then + the
-- replay schedule's total). NULL on rows written by an older release: workers then use created_at plus
-- the normal schedule's total.
ALTER TABLE deliveries ADD COLUMN deadline_at timestamptz;

-- Consecutive failed attempts to the endpoint, across every worker (reset by a success), so that any
-- worker can say why a paused endpoint's delivery failed ("paused after N consecutive failures since ...").
ALTER TABLE endpoints ADD COLUMN failure_streak integer NOT NULL DEFAULT 0;
