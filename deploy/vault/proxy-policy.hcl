# The proxy role's Vault/OpenBao policy: what every application pod's sidecar may do.
#
# Read and decrypt, nothing else. A compromised pod (or the app sharing its loopback) holding
# this token can neither change a credential nor encrypt a new secret: every KV write and every
# transit encrypt answers 403 (tests/k8s/test_policy.py and tests/integration/test_roles.py).
#
# Concrete defaults: KV v2 mount "secret", prefix "sidecar/payments", transit mount "transit",
# transit key "sidecar". setup.sh renders this file for other values (KV_MOUNT, PREFIX,
# TRANSIT_MOUNT, TRANSIT_KEY): `deploy/vault/setup.sh --print-policy proxy`. Keep each path on
# one line in this exact form; the renderer rewrites the quoted paths.
#
# Not granted, on purpose: any KV write or delete, transit encrypt, key creation, rotation or
# config, anything under sys/.

# Credential records and proxy keys: <prefix>/credentials/<name>, <prefix>/keys/<name>/<id>.
path "secret/data/sidecar/payments/*" {
  capabilities = ["read"]
}

# Listing records and keys, and their current version (the cache re-reads only what changed).
path "secret/metadata/sidecar/payments/*" {
  capabilities = ["read", "list"]
}

# Secret fields are decrypted into memory for injection...
path "transit/decrypt/sidecar" {
  capabilities = ["update"]
}

# ...and proxy keys are checked by their transit HMAC.
path "transit/hmac/sidecar" {
  capabilities = ["update"]
}

path "transit/hmac/sidecar/*" {
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
