-- KAIHOOKS_SECRET_KEY is no longer used as a key itself: each purpose gets a key derived from it with HKDF
-- (shared.master_keys). What is stored says how it was made, so rows written before keep working.

-- Webhook secrets. scheme must match shared.secrets_box: 1 = AES-GCM under the master key itself, the same
-- associated data for every endpoint (every row written before this migration, and any written by an older
-- release during an upgrade: hence the default); 2 = AES-GCM under the derived key, bound to its endpoint.
ALTER TABLE endpoint_secrets ADD COLUMN scheme smallint NOT NULL DEFAULT 1 CHECK (scheme IN (1, 2));

-- API-key hashes. hash_scheme must match shared.apikeys: 1 = HMAC under the master key itself, 2 = HMAC under
-- the derived key. hash_key_id names the master key a hash was made under (NULL: before this migration).
-- Scheme 1 hashes are replaced at the key's next use; keys not used before their master key is retired stop
-- working then (README: rotating KAIHOOKS_SECRET_KEY).
ALTER TABLE api_keys ADD COLUMN hash_scheme smallint NOT NULL DEFAULT 1 CHECK (hash_scheme IN (1, 2));
ALTER TABLE api_keys ADD COLUMN hash_key_id text;
