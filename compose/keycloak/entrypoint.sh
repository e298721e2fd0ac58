#!/bin/bash
# Reads Keycloak's secrets from files (compose secrets) into the variables kc.sh expects, so no
# secret is ever a plain value in the compose file or the container's configured environment.
set -euo pipefail
for name in KC_DB_PASSWORD KC_BOOTSTRAP_ADMIN_PASSWORD; do
  file_var="${name}_FILE"
  if [[ -n "${!file_var:-}" ]]; then
    value="$(<"${!file_var}")"
    export "${name}=${value}"
    unset "${file_var}"
  fi
done
exec /opt/keycloak/bin/kc.sh "$@"
