#!/bin/sh
# Install the Debian packages Scrub In needs, when missing. Usage: deb-packages.sh PKG...
missing=""
for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
    echo "scrubin needs these Debian packages: sudo apt-get install$missing" >&2
    exit 1
fi
echo "installing Debian packages:$missing"
apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
# Debian's janus enables a system service with /etc/janus's defaults (HTTP API on every
# interface, no api_secret): Scrub In runs its own locked-down Janus (mentor/sfu_janus.py).
case " $missing " in *" janus "*)
    if [ -d /run/systemd/system ]; then systemctl disable --now janus >/dev/null 2>&1 || true; fi
esac
