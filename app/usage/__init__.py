"""Usage history and ledger exports: what an account consumed over time (`GET /v1/usage`)
and its ledger as CSV. Reads only; above credits and generation (it joins both)."""
