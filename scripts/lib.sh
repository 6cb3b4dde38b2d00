# Shared by scripts/setup, scripts/up and scripts/test (sourced, not run). Every tool these scripts install
# must be reachable from the shell that sourced this file, not only from a child process.

CACHE="${VOICE_AGENT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/voice-agent}"

# uv: the one on PATH, else a private copy in the cache (installed with pip --target, so neither PEP 668 nor
# the user's PATH can hide it). Exported PATH makes it visible to this shell and every child.
ensure_uv() {
  command -v uv >/dev/null && return 0
  local home="$CACHE/uv"
  if [[ ! -x "$home/bin/uv" ]]; then
    printf '==> installing uv into %s\n' "$home"
    mkdir -p "$CACHE"
    rm -rf "$home.tmp"
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --target "$home.tmp" uv ||
      { printf 'setup: could not install uv with pip: install uv (https://docs.astral.sh/uv/) and re-run\n' >&2; exit 2; }
    rm -rf "$home" && mv "$home.tmp" "$home"
  fi
  export PATH="$home/bin:$PATH"
  command -v uv >/dev/null || { printf 'setup: uv was installed in %s/bin but cannot be run\n' "$home" >&2; exit 2; }
}
