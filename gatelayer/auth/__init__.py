"""
Authentication helpers shared by the jwt and api_key filters.

- L{gatelayer.auth.names}: algorithm and header names, shared with the
  config parser (pure: it loads nothing);
- L{gatelayer.auth.jwks}: verification keys (JWKS, PEM, secrets), each pinned
  to one algorithm;
- L{gatelayer.auth.tokens}: JWT verification against a key set and a claims
  policy, with a bounded per-worker cache;
- L{gatelayer.auth.fetch}: keeping a JWKS fetched from a URL current without
  blocking requests;
- L{gatelayer.auth.apikeys}: API key files (consumer = SHA-256 of the key);
- L{gatelayer.auth.credentials}: finding, hiding and refusing credentials in
  requests;
- L{gatelayer.auth.cache}: the bounded expiring cache;
- L{gatelayer.auth.testing}: keys, tokens and an in-memory agent for tests.

Nothing here imports the global reactor; the fetcher takes one as argument.
"""
