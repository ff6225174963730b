#!/usr/bin/env bash
# Vault/OpenBao setup for one credential sidecar deployment. Idempotent: run it again at will.
#
#   1. KV v2 at $KV_MOUNT (enabled if missing; refuses a KV v1 mount rather than upgrading it)
#   2. transit at $TRANSIT_MOUNT and the key $TRANSIT_KEY (created once; never rotated here)
#   3. two policies, rendered for the values below: $POLICY_NAME from proxy-policy.hcl (read and
#      decrypt: every application pod) and $ADMIN_POLICY_NAME from admin-policy.hcl (transit
#      encrypt + HMAC: the `sidecar admin` Deployment); with WRITE_OPERATOR_POLICY=true also
#      $OPERATOR_POLICY_NAME from operator-policy.example.hcl (a person's KV write rights)
#   4. kubernetes auth at $K8S_AUTH_MOUNT (configured only when new or when KUBERNETES_HOST is set)
#   5. the role $ROLE: service account $SERVICE_ACCOUNT in $NAMESPACE -> $POLICY_NAME (proxy), and
#      the role $ADMIN_ROLE: $ADMIN_SERVICE_ACCOUNT in $ADMIN_NAMESPACE -> $ADMIN_POLICY_NAME
#
# Needs the `bao` or `vault` CLI (VAULT_CLI to choose), logged in with a token allowed to manage
# mounts, policies and auth (BAO_ADDR/BAO_TOKEN or VAULT_ADDR/VAULT_TOKEN).
#
# Vault outside the cluster: set KUBERNETES_HOST (the API server URL), KUBERNETES_CA_CERT (a PEM
# file) and TOKEN_REVIEWER_JWT_FILE (a token of a service account bound to system:auth-delegator),
# plus DISABLE_LOCAL_CA_JWT=true. The sidecar's token has audience "vault", which the API server
# rejects, so Vault cannot use it to review itself: a reviewer token (or Vault's own, in-cluster)
# is required.
#
# Usage: setup.sh            set everything up
#        setup.sh --print-policy [proxy|admin|operator]   print a rendered policy and exit
set -euo pipefail

KV_MOUNT=${KV_MOUNT:-secret}
PREFIX=${PREFIX:-sidecar/payments}
TRANSIT_MOUNT=${TRANSIT_MOUNT:-transit}
TRANSIT_KEY=${TRANSIT_KEY:-sidecar}
POLICY_NAME=${POLICY_NAME:-sidecar-payments}
ADMIN_POLICY_NAME=${ADMIN_POLICY_NAME:-sidecar-payments-admin}
OPERATOR_POLICY_NAME=${OPERATOR_POLICY_NAME:-sidecar-payments-operator}
WRITE_OPERATOR_POLICY=${WRITE_OPERATOR_POLICY:-false}
K8S_AUTH_MOUNT=${K8S_AUTH_MOUNT:-kubernetes}
ROLE=${ROLE:-payments}
SERVICE_ACCOUNT=${SERVICE_ACCOUNT:-payments-app}
NAMESPACE=${NAMESPACE:-payments}
ADMIN_ROLE=${ADMIN_ROLE:-payments-admin}
ADMIN_SERVICE_ACCOUNT=${ADMIN_SERVICE_ACCOUNT:-sidecar-admin}
ADMIN_NAMESPACE=${ADMIN_NAMESPACE:-$NAMESPACE}
AUDIENCE=${AUDIENCE:-vault}
TOKEN_TTL=${TOKEN_TTL:-1h}
TOKEN_MAX_TTL=${TOKEN_MAX_TTL:-4h}
KUBERNETES_HOST=${KUBERNETES_HOST:-}
KUBERNETES_CA_CERT=${KUBERNETES_CA_CERT:-}
TOKEN_REVIEWER_JWT_FILE=${TOKEN_REVIEWER_JWT_FILE:-}
DISABLE_LOCAL_CA_JWT=${DISABLE_LOCAL_CA_JWT:-false}
HERE=$(cd "$(dirname "$0")" && pwd)

die() { echo "setup.sh: $*" >&2; exit 1; }
say() { echo "setup.sh: $*"; }

check_values() {
  local name value
  for name in KV_MOUNT PREFIX TRANSIT_MOUNT TRANSIT_KEY POLICY_NAME ADMIN_POLICY_NAME \
      OPERATOR_POLICY_NAME K8S_AUTH_MOUNT ROLE ADMIN_ROLE; do
    value=${!name}
    [[ $value =~ ^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$ ]] \
      || die "$name=$value: use letters, digits, . _ - and inner slashes only"
  done
}

# Each policy file holds the defaults; rewrite only its quoted paths, so comments stay as they are.
# $1: proxy, admin or operator.
render_policy() {
  local file
  case ${1:-proxy} in
    proxy) file=$HERE/proxy-policy.hcl ;;
    admin) file=$HERE/admin-policy.hcl ;;
    operator) file=$HERE/operator-policy.example.hcl ;;
    *) die "no policy named $1 (proxy, admin or operator)" ;;
  esac
  sed -E \
    -e "s#^path \"secret/(data|metadata)/sidecar/payments/#path \"$KV_MOUNT/\\1/$PREFIX/#" \
    -e "s#^path \"transit/(encrypt|decrypt|hmac|verify|keys)/sidecar(\"|/)#path \"$TRANSIT_MOUNT/\\1/$TRANSIT_KEY\\2#" \
    "$file"
}

pick_cli() {
  CLI=${VAULT_CLI:-}
  if [[ -z $CLI ]]; then
    if command -v bao >/dev/null; then CLI=bao
    elif command -v vault >/dev/null; then CLI=vault
    else die "neither bao nor vault is on PATH"
    fi
  fi
  if [[ $(basename "$CLI") == bao ]]; then
    export BAO_ADDR=${BAO_ADDR:-${VAULT_ADDR:-}} BAO_TOKEN=${BAO_TOKEN:-${VAULT_TOKEN:-}}
  else
    export VAULT_ADDR=${VAULT_ADDR:-${BAO_ADDR:-}} VAULT_TOKEN=${VAULT_TOKEN:-${BAO_TOKEN:-}}
  fi
}

cli() { "$CLI" "$@"; }

# Prints the engine type mounted at $1, or nothing when the path is free.
mount_type() { cli read -field=type "sys/mounts/$1" 2>/dev/null || true; }
auth_type() { cli read -field=type "sys/auth/$1" 2>/dev/null || true; }

ensure_kv() {
  case $(mount_type "$KV_MOUNT") in
    "") cli secrets enable -path="$KV_MOUNT" kv-v2 >/dev/null; say "enabled KV v2 at $KV_MOUNT/" ;;
    kv) [[ $(cli read -field=options "sys/mounts/$KV_MOUNT" 2>/dev/null || true) == *version:2* ]] \
          || die "$KV_MOUNT/ is KV v1; the sidecar needs KV v2 (upgrade it yourself, knowingly)"
        say "KV v2 at $KV_MOUNT/ already there" ;;
    *) die "$KV_MOUNT/ is mounted, but not as KV" ;;
  esac
}

ensure_transit() {
  case $(mount_type "$TRANSIT_MOUNT") in
    "") cli secrets enable -path="$TRANSIT_MOUNT" transit >/dev/null
        say "enabled transit at $TRANSIT_MOUNT/" ;;
    transit) say "transit at $TRANSIT_MOUNT/ already there" ;;
    *) die "$TRANSIT_MOUNT/ is mounted, but not as transit" ;;
  esac
  if cli read "$TRANSIT_MOUNT/keys/$TRANSIT_KEY" >/dev/null 2>&1; then
    say "transit key $TRANSIT_KEY already there"
  else
    cli write -f "$TRANSIT_MOUNT/keys/$TRANSIT_KEY" type=aes256-gcm96 >/dev/null
    say "created transit key $TRANSIT_KEY"
  fi
}

write_policies() {
  render_policy proxy | cli policy write "$POLICY_NAME" - >/dev/null
  say "wrote policy $POLICY_NAME (proxy role: read + decrypt)"
  render_policy admin | cli policy write "$ADMIN_POLICY_NAME" - >/dev/null
  say "wrote policy $ADMIN_POLICY_NAME (admin role: transit encrypt + hmac)"
  if [[ $WRITE_OPERATOR_POLICY == true ]]; then
    render_policy operator | cli policy write "$OPERATOR_POLICY_NAME" - >/dev/null
    say "wrote policy $OPERATOR_POLICY_NAME (example operator: writes under credentials/a*)"
  fi
}

configure_kubernetes() {
  local args=("kubernetes_host=${KUBERNETES_HOST:-https://kubernetes.default.svc}")
  [[ -n $KUBERNETES_CA_CERT ]] && args+=("kubernetes_ca_cert=@$KUBERNETES_CA_CERT")
  [[ -n $TOKEN_REVIEWER_JWT_FILE ]] && args+=("token_reviewer_jwt=@$TOKEN_REVIEWER_JWT_FILE")
  [[ $DISABLE_LOCAL_CA_JWT == true ]] && args+=("disable_local_ca_jwt=true")
  cli write "auth/$K8S_AUTH_MOUNT/config" "${args[@]}" >/dev/null
  say "configured kubernetes auth at $K8S_AUTH_MOUNT/ for ${args[0]#*=}"
}

ensure_kubernetes_auth() {
  case $(auth_type "$K8S_AUTH_MOUNT") in
    "") cli auth enable -path="$K8S_AUTH_MOUNT" kubernetes >/dev/null
        say "enabled kubernetes auth at $K8S_AUTH_MOUNT/" ;;
    kubernetes) ;;
    *) die "auth/$K8S_AUTH_MOUNT/ is enabled, but not as kubernetes" ;;
  esac
  # Another team may share this mount: its config is rewritten only when asked to.
  if [[ -n $KUBERNETES_HOST ]] || ! cli read "auth/$K8S_AUTH_MOUNT/config" >/dev/null 2>&1; then
    configure_kubernetes
  else
    say "kubernetes auth at $K8S_AUTH_MOUNT/ already configured (set KUBERNETES_HOST to change)"
  fi
}

# $1 role, $2 service account, $3 namespace, $4 policy
write_role() {
  cli write "auth/$K8S_AUTH_MOUNT/role/$1" \
    bound_service_account_names="$2" \
    bound_service_account_namespaces="$3" \
    audience="$AUDIENCE" \
    token_policies="$4" \
    token_ttl="$TOKEN_TTL" \
    token_max_ttl="$TOKEN_MAX_TTL" >/dev/null
  say "role $1: $3/$2 -> policy $4 (audience $AUDIENCE)"
}

main() {
  check_values
  case ${1:-} in
    --print-policy) render_policy "${2:-proxy}"; return ;;
    -h|--help) sed -n '2,24p' "$0"; return ;;
    "") ;;
    *) die "unknown argument $1 (try --help)" ;;
  esac
  pick_cli
  ensure_kv
  ensure_transit
  write_policies
  ensure_kubernetes_auth
  write_role "$ROLE" "$SERVICE_ACCOUNT" "$NAMESPACE" "$POLICY_NAME"
  write_role "$ADMIN_ROLE" "$ADMIN_SERVICE_ACCOUNT" "$ADMIN_NAMESPACE" "$ADMIN_POLICY_NAME"
  say "done"
}

main "$@"
