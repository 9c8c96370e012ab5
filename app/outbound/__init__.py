"""Outbound events: a transactional outbox and the dispatcher that delivers it as Standard
Webhooks to `EVENTS_WEBHOOK_URL`."""
