-- The SQL of one generation as the service runs it (offline provider: no provider call),
-- for pgbench. Authentication, then the reserve and the settle transactions.
\set n random(1, :accounts)
SELECT account_id AS acct, site_id AS site, lookup_id AS lookup FROM bench_account WHERE n = :n \gset
SELECT k.secret_hash, k.revoked_at, a.id, a.email, a.created_at, a.trial_ends_at, a.subscription_status, a.current_period_end, a.cancel_at_period_end FROM api_key k JOIN account a ON a.id = k.account_id WHERE k.lookup_id = :lookup;
BEGIN;
SELECT id, email, trial_ends_at, subscription_status, current_period_end FROM account WHERE id = :acct;
SELECT id, account_id, deleted_at FROM site WHERE id = :site;
UPDATE credit_balance SET available = available - 1, reserved = reserved + 1, updated_at = now() WHERE account_id = :acct AND available >= 1 RETURNING available, reserved;
INSERT INTO credit_hold (id, account_id, amount, consumed, status, reference, created_at, expires_at) VALUES (gen_random_uuid(), :acct, 1, 0, 'open', 'generation-bench', now(), now() + interval '5 minutes') RETURNING id AS hold \gset
INSERT INTO generation (id, account_id, site_id, kind, status, input, hold_id, expires_at, credits_charged, created_at) VALUES (gen_random_uuid(), :acct, :site, 'meta_title', 'running', '{"page_title": "Handmade oak furniture"}', :hold, now() + interval '5 minutes', 0, now()) RETURNING id AS gen \gset
SELECT pg_notify('rankframe_balance_changed', :acct);
COMMIT;
BEGIN;
SELECT id, status, hold_id FROM generation WHERE id = :gen FOR UPDATE;
SELECT id, account_id, amount, status, expires_at FROM credit_hold WHERE id = :hold FOR UPDATE;
UPDATE credit_hold SET status = 'settled', consumed = 1, resolved_at = now() WHERE id = :hold;
UPDATE credit_balance SET available = available + 0, reserved = reserved - 1, updated_at = now() WHERE account_id = :acct RETURNING available + reserved AS total \gset
INSERT INTO ledger_entry (id, account_id, type, amount, balance_after, description, hold_id, generation_id, created_at) VALUES (gen_random_uuid(), :acct, 'consumption', -1, :total, 'AI generation', :hold, :gen, now());
UPDATE generation SET status = 'succeeded', output = '{"text": "Handmade oak furniture"}', credits_charged = 1, completed_at = now() WHERE id = :gen;
SELECT id, email, trial_ends_at, subscription_status FROM account WHERE id = :acct;
SELECT available, reserved FROM credit_balance WHERE account_id = :acct;
SELECT pg_notify('rankframe_balance_changed', :acct);
COMMIT;
