# Shared set-up for scripts/check and scripts/demo: Debian packages when
# missing, and a virtualenv in .venv with the project installed.
# Sourced, not run.

ensure_debian_packages() {
  local missing=()
  local package command
  for pair in "$@"; do
    package=${pair%%:*}
    command=${pair#*:}
    if [ "$command" = python-venv ]; then
      python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=("$package")
    else
      command -v "$command" >/dev/null 2>&1 || missing+=("$package")
    fi
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  echo "installing Debian packages: ${missing[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# ensure_venv EXTRAS: make .venv if needed and install the project with EXTRAS.
# uv installs the same versions pip would in seconds rather than a minute;
# compiled to bytecode as pip does, or every fresh Python process (a test's
# server, say) compiles what it imports first, seconds on a loaded machine.
ensure_venv() {
  local extras=$1
  if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
  fi
  if [ ! -x .venv/bin/uv ]; then
    .venv/bin/python -m pip install --quiet --disable-pip-version-check "uv>=0.9"
  fi
  .venv/bin/uv pip install --quiet --compile-bytecode --python .venv/bin/python \
    -e ".${extras:+[$extras]}"
}

# ensure_npm_packages DIR: install DIR's locked npm packages (npm ci) unless
# node_modules already matches the lock file.
ensure_npm_packages() {
  local dir=$1
  if [ ! -f "$dir/node_modules/.package-lock.json" ] \
    || [ "$dir/package-lock.json" -nt "$dir/node_modules/.package-lock.json" ]; then
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
  fi
}
