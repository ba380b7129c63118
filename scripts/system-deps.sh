#!/bin/sh
# Install the real tools the end-to-end tests run against: Prometheus and Alertmanager
# (with promtool and amtool) and Chromium (headless landing-page check).
# Only as root and only when missing; otherwise say what the tests will skip.
set -eu
missing=""
packages=""
for pair in prometheus:prometheus promtool:prometheus \
            prometheus-alertmanager:prometheus-alertmanager amtool:prometheus-alertmanager \
            chromium:chromium; do
    tool=${pair%%:*}
    package=${pair#*:}
    if ! command -v "$tool" >/dev/null 2>&1; then
        missing="$missing $tool"
        case " $packages " in *" $package "*) ;; *) packages="$packages $package" ;; esac
    fi
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian packages:$packages (missing:$missing)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    # shellcheck disable=SC2086
    apt-get install -y -q --no-install-recommends $packages >/dev/null
else
    echo "note:$missing not installed; end-to-end tests needing them will be skipped" >&2
    echo "      (as root: apt-get install$packages)" >&2
fi
