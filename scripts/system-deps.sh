#!/bin/sh
# Install the real Prometheus and Alertmanager the end-to-end tests run against.
# Only as root and only when missing; otherwise say what the tests will skip.
set -eu
missing=""
for tool in prometheus promtool prometheus-alertmanager amtool; do
    command -v "$tool" >/dev/null 2>&1 || missing="$missing $tool"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian prometheus and prometheus-alertmanager (missing:$missing)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends prometheus prometheus-alertmanager >/dev/null
else
    echo "note:$missing not installed; end-to-end tests needing them will be skipped" >&2
    echo "      (as root: apt-get install prometheus prometheus-alertmanager)" >&2
fi
