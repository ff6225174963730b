# Least-privilege Vault/OpenBao policy for one credential sidecar deployment.
#
# Concrete defaults: KV v2 mount "secret", prefix "sidecar/payments", transit mount "transit",
# transit key "sidecar". setup.sh renders this file for other values (KV_MOUNT, PREFIX,
# TRANSIT_MOUNT, TRANSIT_KEY): `deploy/vault/setup.sh --print-policy`. Keep each path on one
# line in this exact form; the renderer rewrites the quoted paths.
#
# Not granted, on purpose: soft delete/undelete/destroy of versions, transit key creation,
# rotation or config (the operator's setup.sh creates the key), anything under sys/.
# tests/k8s/test_policy.py proves both halves against a real OpenBao.

# Credential records: <prefix>/credentials/<name>. Writes are check-and-set (create + update).
path "secret/data/sidecar/payments/*" {
  capabilities = ["create", "read", "update"]
}

# Listing records, version history, and deleting a record with all its versions.
path "secret/metadata/sidecar/payments/*" {
  capabilities = ["read", "list", "delete"]
}

# Secret fields are encrypted and decrypted with one named key...
path "transit/encrypt/sidecar" {
  capabilities = ["update"]
}

path "transit/decrypt/sidecar" {
  capabilities = ["update"]
}

# ...and fingerprinted with transit HMAC, so `verify` compares without decrypting.
path "transit/hmac/sidecar" {
  capabilities = ["update"]
}

path "transit/hmac/sidecar/*" {
  capabilities = ["update"]
}

path "transit/verify/sidecar" {
  capabilities = ["update"]
}

path "transit/verify/sidecar/*" {
  capabilities = ["update"]
}

# Start-up checks that the key exists; reading it never returns key material.
path "transit/keys/sidecar" {
  capabilities = ["read"]
}

# Token upkeep, also in Vault's "default" policy; repeated here so a role with
# token_no_default_policy=true still works.
path "auth/token/lookup-self" {
  capabilities = ["read"]
}

path "auth/token/renew-self" {
  capabilities = ["update"]
}
