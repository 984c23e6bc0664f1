# reconciler setup step (shipped with the reconciler; values from the request arrive only as arguments)
set -eu
export DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

# put FILE BASE64: give FILE the decoded content, atomically; status 0 when it changed, 1 when it had it already.
# Any failure to write ends the step (put is called under `if`, where `set -e` does not reach).
put() {
    new=$(mktemp "$1.XXXXXX") || exit 1
    if ! printf '%s' "$2" | base64 -d >"$new"; then
        rm -f "$new"
        echo "cannot write $1"
        exit 1
    fi
    if [ -f "$1" ] && cmp -s "$new" "$1"; then
        rm -f "$new"
        return 1
    fi
    chmod 0644 "$new" && mv -f "$new" "$1" || exit 1
}

# apply_service UNIT CHANGED: enable the unit; reload it when its configuration changed, start it when it is down.
apply_service() {
    systemctl enable --quiet "$1"
    if [ "$2" = yes ]; then
        systemctl reload-or-restart "$1"
        echo "$1 reloaded"
    elif ! systemctl is-active --quiet "$1"; then
        systemctl start "$1"
        echo "$1 started"
    else
        echo "$1 already running with this configuration"
    fi
}

# reload_site UNIT CONF APPLIED: reload UNIT unless it already runs with CONF; APPLIED keeps what it last loaded,
# so a step cut short between writing a site and the reload still reloads the next time.
reload_site() {
    changed=yes
    cmp -s "$2" "$3" && changed=no
    apply_service "$1" "$changed"
    cp "$2" "$3"
}
