"""Support: finding a customer's generation (single or batch item), reading it with its
ledger entries, and crediting it back at most once. A flow above generation and credits."""
