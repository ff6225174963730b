# An example policy for a *person or team* who changes credentials through the admin role.
#
# The admin API checks the caller's token with sys/capabilities-self on the credential's KV path
# and makes the write with that token, so a policy like this one is the whole access control:
# this team may create, replace, disable and delete credentials whose names start with "a"
# (azupay, ...) and manage their proxy keys, and nothing else; a write to "paynet" answers 403
# SC6001. No transit rights are needed: the admin role encrypts with its own token.
#
# setup.sh writes it (as $OPERATOR_POLICY_NAME) when WRITE_OPERATOR_POLICY=true; copy and narrow
# it per team. `deploy/vault/setup.sh --print-policy operator` renders it.

path "secret/data/sidecar/payments/credentials/a*" {
  capabilities = ["create", "read", "update"]
}

path "secret/metadata/sidecar/payments/credentials/a*" {
  capabilities = ["read", "delete"]
}

path "secret/data/sidecar/payments/keys/a*" {
  capabilities = ["create", "read", "update"]
}

path "secret/metadata/sidecar/payments/keys/a*" {
  capabilities = ["read", "list", "delete"]
}

# Listing the credentials (names and metadata only; each record's read is still per path).
path "secret/metadata/sidecar/payments/credentials" {
  capabilities = ["list"]
}

path "secret/metadata/sidecar/payments/credentials/" {
  capabilities = ["list"]
}
