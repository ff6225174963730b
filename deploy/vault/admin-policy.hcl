# The admin role's own Vault/OpenBao policy (`sidecar admin`): transit encrypt and HMAC only.
#
# The admin role writes no KV with this token: every KV read and write of the admin API is made
# with the *caller's* Vault token (X-Vault-Token), so the caller's policy (see
# operator-policy.example.hcl) decides which credential they may change, and Vault's audit log
# names them. This token only turns a secret into a transit ciphertext and fingerprint, and
# cannot decrypt one: the admin role holds no plaintext credential in memory.
#
# Single-host option: with a static admin token (admin.token_file) instead of callers' tokens,
# the admin role's token must also hold an operator policy, since it then writes KV itself.
#
# setup.sh renders this file like proxy-policy.hcl: `deploy/vault/setup.sh --print-policy admin`.

path "transit/encrypt/sidecar" {
  capabilities = ["update"]
}

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

path "auth/token/lookup-self" {
  capabilities = ["read"]
}

path "auth/token/renew-self" {
  capabilities = ["update"]
}
