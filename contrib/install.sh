#!/bin/sh
# Installs flipdns as a system service, as README "Running under systemd" says, on a
# Debian-like system, as root:
#   - the binary, as /usr/local/bin/flipdns (built with `cargo install`, or --binary PATH);
#   - the system user and group `flipdns`;
#   - /etc/flipdns (root:flipdns, 0750): flipdns.toml from the shipped example with the
#     admin socket in /run/flipdns and the state in /var/lib/flipdns, the example zone, and a
#     fresh TSIG secret xfr-key.b64 for the secondaries; each 0640 root:flipdns (readable by
#     the service, writable by root only; a secret readable by others is refused). A file
#     that exists is left as it is;
#   - the unit, /etc/systemd/system/flipdns.service, and `systemctl daemon-reload`.
# Then edit /etc/flipdns/flipdns.toml and `systemctl enable --now flipdns`.
#
# Usage: contrib/install.sh [--root DIR] [--binary PATH]
#   --root DIR     install under DIR instead of / (the user is still this system's); for CI
#   --binary PATH  install this binary instead of building one
set -eu

root=""
binary=""
while [ $# -gt 0 ]; do
  case "$1" in
    --root) root="$2"; shift 2 ;;
    --binary) binary="$2"; shift 2 ;;
    *) echo "install.sh: unknown argument $1 (see the comment at its top)" >&2; exit 2 ;;
  esac
done
source=$(cd "$(dirname "$0")/.." && pwd)

if [ "$(id -u)" -ne 0 ]; then
  echo "install.sh: run it as root (sudo contrib/install.sh)" >&2
  exit 1
fi

# The binary.
if [ -n "$binary" ]; then
  install -D -m 0755 "$binary" "$root/usr/local/bin/flipdns"
else
  cargo install --locked --path "$source" --root "$root/usr/local"
fi

# The user the service runs as.
if ! getent passwd flipdns >/dev/null; then
  useradd --system --user-group --no-create-home --home-dir /var/lib/flipdns \
    --shell /usr/sbin/nologin flipdns
fi

# The configuration: readable by the service, writable by root.
etc="$root/etc/flipdns"
install -d -m 0750 -o root -g flipdns "$etc"
place() { # place FILE MODE: install stdin as FILE unless it exists
  if [ -e "$1" ]; then
    echo "install.sh: $1 exists; left as it is" >&2
    cat >/dev/null
  else
    install -m "$2" -o root -g flipdns /dev/stdin "$1"
  fi
}
sed -e 's|^admin_socket = .*|admin_socket = "/run/flipdns/flipdns.sock"|' \
    -e 's|^state_file = .*|state_file = "/var/lib/flipdns/state.json"|' \
    "$source/zones/flipdns.toml" | place "$etc/flipdns.toml" 0640
place "$etc/svc.example.com.zone" 0640 < "$source/zones/svc.example.com.zone"
head -c 32 /dev/urandom | base64 | place "$etc/xfr-key.b64" 0640

# The unit.
install -D -m 0644 "$source/contrib/systemd/flipdns.service" \
  "$root/etc/systemd/system/flipdns.service"
if [ -z "$root" ] && command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
  systemctl daemon-reload
fi

echo "installed. Next: edit $etc/flipdns.toml (listen: the address your secondaries reach),"
echo "then: systemctl enable --now flipdns; FLIPDNS_SOCKET=/run/flipdns/flipdns.sock flipdns ctl status"
