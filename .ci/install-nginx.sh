#!/usr/bin/env bash
# Install nginx and envsubst for tests/test_deploy.py, only when they are missing (Debian/Ubuntu, as root).
set -euo pipefail

need=()
command -v nginx >/dev/null || need+=(nginx)
command -v envsubst >/dev/null || need+=(gettext-base)
[ ${#need[@]} -eq 0 ] && exit 0

apt-get update -qq -o DPkg::Lock::Timeout=300
packages=()
for want in "${need[@]}"; do
    if [ "$want" = nginx ]; then
        # `nginx` on Debian and Ubuntu; nginx-light where only the flavoured packages exist.
        for candidate in nginx nginx-light; do
            if [[ "$(apt-cache policy "$candidate")" =~ Candidate:\ [0-9] ]]; then
                want=$candidate
                break
            fi
        done
    fi
    packages+=("$want")
done

# Keep apt from starting a system nginx on port 80: the tests start their own.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod +x "$policy"
    trap 'rm -f "$policy"' EXIT
fi
DEBIAN_FRONTEND=noninteractive apt-get install -o DPkg::Lock::Timeout=300 -y -qq --no-install-recommends "${packages[@]}" >/dev/null
nginx -v
