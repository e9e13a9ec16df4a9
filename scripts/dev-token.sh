#!/usr/bin/env bash
# Mints an HS256 bearer token for local development (needs openssl).
#   scripts/dev-token.sh [USER_UUID] [PREFERRED_USERNAME]
# Uses AUTH_JWT_SECRET (default: the local run script's secret). Valid 24 h.
set -euo pipefail
secret=${AUTH_JWT_SECRET:-local-dev-secret-change-me}
sub=${1:-$(cat /proc/sys/kernel/random/uuid)}
name=${2:-}
exp=$(( $(date +%s) + 86400 ))
b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
header=$(printf '{"alg":"HS256","typ":"JWT"}' | b64url)
if [ -n "$name" ]; then
  claims=$(printf '{"sub":"%s","exp":%d,"preferred_username":"%s"}' "$sub" "$exp" "$name")
else
  claims=$(printf '{"sub":"%s","exp":%d}' "$sub" "$exp")
fi
payload=$(printf '%s' "$claims" | b64url)
sig=$(printf '%s.%s' "$header" "$payload" | openssl dgst -sha256 -hmac "$secret" -binary | b64url)
printf '%s.%s.%s\n' "$header" "$payload" "$sig"
