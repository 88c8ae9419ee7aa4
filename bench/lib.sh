# Shared by the bench scripts (sourced, not run).

# hex N: N random bytes as lowercase hex.
hex() { head -c "$1" /dev/urandom | od -An -tx1 | tr -d ' \n'; }

# Fresh secrets for the servers a script starts.
export JWT_SECRET="bench-$(hex 24)"
export ENCRYPTION_KEY="$(hex 32)"

# schema_url URL SCHEMA: the PostgreSQL URL with its search_path set to SCHEMA.
schema_url() {
  local sep='?'
  case "$1" in *\?*) sep='&';; esac
  echo "${1}${sep}options=-c%20search_path%3D${2}"
}
