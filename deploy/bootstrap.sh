#!/bin/sh
# Makes a small federation on one host (a pilot, or a test): the PKI, one configuration, data
# directory and admin token per node, the cities in the hub's directory, and federation.json
# for the `sfs` command line.
#
#   bootstrap.sh [--base-port PORT] [--federation-host ADDR] DIR HUB_HOST CITY [CITY ...]
#
# CITY is an id (`malmo`), or `id:Display name:County` (`malmo:Malmö:Skåne län`); the display
# name defaults to the id, the county to "-" (change both later with the hub's directory).
# HUB_HOST is the name or address cities use to reach the hub (it goes in the hub's
# certificate and in each city's federation.hub_url).
#
# DIR gets:
#   pki/                 the CA (ca.key: move it offline after the pilot's setup), one
#                        certificate per node, revoked.txt (`sfs-node pki revoke`), which the
#                        hub re-reads (tls.revoked)
#   coordinator/         the national coordinator's release key pair: move release.key to the
#                        coordinator's own machine; every node uses release.pub
#   <node>/node.toml     the node's configuration (the hub is `national`)
#   <node>/data/         its data directory; <node>/data.key, its at-rest key, lies beside it
#   <node>/admin.token   an admin token (mode 0600)
#   federation.json      every node's API, admin token and the CA (mode 0600), for
#                        `sfs --federation DIR/federation.json --node hub|<city> ...`
#
# Ports: every node listens on loopback for its API and metrics, each on its own ports, so all
# run on one host: the hub's API on PORT (default 7443), its federation listener on PORT+1 (on
# ADDR, default 0.0.0.0: cities on other hosts reach it; mutual TLS only), its metrics on PORT+2;
# the n-th city's API on PORT+10n and metrics on PORT+10n+2.
#
# Existing files are kept, so running it again only adds what is missing (new cities get the
# next free ports). The cities are added to the hub's directory through its API: if the hub is
# not running, the script starts it for that moment. Uses `sfs-node` (or $SFS_NODE) and `sfs`
# (or $SFS_CLI).
set -eu
SFS_NODE=${SFS_NODE:-sfs-node}
SFS_CLI=${SFS_CLI:-sfs}
base_port=7443
federation_host=0.0.0.0
while [ $# -gt 0 ]; do
    case $1 in
        --base-port) base_port=$2; shift 2 ;;
        --federation-host) federation_host=$2; shift 2 ;;
        --) shift; break ;;
        -*) echo "bootstrap.sh: unknown option $1" >&2; exit 2 ;;
        *) break ;;
    esac
done
if [ $# -lt 3 ]; then
    echo "usage: bootstrap.sh [--base-port PORT] [--federation-host ADDR] DIR HUB_HOST CITY [CITY ...]" >&2
    exit 2
fi
case $base_port in
    ''|*[!0-9]*) echo "bootstrap.sh: --base-port must be a number" >&2; exit 2 ;;
esac
mkdir -p "$1/pki"
dir=$(cd "$1" && pwd)
hub_host=$2
shift 2

[ -f "$dir/pki/ca.crt" ] || "$SFS_NODE" pki init --dir "$dir/pki"
[ -f "$dir/coordinator/release.pub" ] || "$SFS_NODE" pki release-key --out "$dir/coordinator/release.key"

# node NAME ROLE [EXTRA-NAME]: certificate, data directory and admin token of one node.
node() {
    name=$1; role=$2
    if [ ! -f "$dir/pki/nodes/$role-$name.crt" ]; then
        if [ $# -gt 2 ]; then
            "$SFS_NODE" pki issue --dir "$dir/pki" --node "$name" --role "$role" --name "$3"
        else
            "$SFS_NODE" pki issue --dir "$dir/pki" --node "$name" --role "$role"
        fi
    fi
    mkdir -p "$dir/$name/data"
    if [ ! -f "$dir/$name/admin.token" ]; then
        (umask 077; "$SFS_NODE" token create --data-dir "$dir/$name/data" --role admin \
            --label bootstrap > "$dir/$name/admin.token.new")
        mv "$dir/$name/admin.token.new" "$dir/$name/admin.token"
    fi
}

# api_of NAME: the API address in NAME's configuration.
api_of() {
    awk '/^\[/ { section = $0 } section == "[api]" && /^listen *=/ { gsub(/[" ]/, "", $0); sub(/^listen=/, "", $0); print; exit }' "$dir/$1/node.toml"
}

node national hub "$hub_host"
if [ ! -f "$dir/national/node.toml" ]; then
    cat > "$dir/national/node.toml" <<TOML
# The national hub of a pilot made by deploy/bootstrap.sh; see deploy/hub.toml for every field.
id = "national"
role = "hub"
data_dir = "data"
[api]
listen = "127.0.0.1:$base_port"
[federation]
listen = "$federation_host:$((base_port + 1))"
[metrics]
listen = "127.0.0.1:$((base_port + 2))"
[tls]
ca = "../pki/ca.crt"
cert = "../pki/nodes/hub-national.crt"
key = "../pki/nodes/hub-national.key"
revoked = "../pki/revoked.txt"
[method]
release_public_key = "../coordinator/release.pub"
TOML
fi
"$SFS_NODE" check-config --config "$dir/national/node.toml"

ids=""
for spec in "$@"; do
    city=${spec%%:*}
    ids="$ids $city"
    node "$city" city
    if [ ! -f "$dir/$city/node.toml" ]; then
        slot=$(( $(ls "$dir"/*/node.toml | wc -l) ))
        cat > "$dir/$city/node.toml" <<TOML
# The city $city of a pilot made by deploy/bootstrap.sh; see deploy/city.toml for every field.
id = "$city"
role = "city"
data_dir = "data"
[api]
listen = "127.0.0.1:$((base_port + 10 * slot))"
[federation]
hub_url = "https://$hub_host:$((base_port + 1))"
hub_id = "national"
[metrics]
listen = "127.0.0.1:$((base_port + 10 * slot + 2))"
[tls]
ca = "../pki/ca.crt"
cert = "../pki/nodes/city-$city.crt"
key = "../pki/nodes/city-$city.key"
[method]
release_public_key = "../coordinator/release.pub"
TOML
    fi
    "$SFS_NODE" check-config --config "$dir/$city/node.toml"
done

# federation.json: every node made here, the cities as found in DIR.
json_node() { # name
    printf '{"name": "%s", "api": "https://%s", "token": "%s", "data_dir": "%s"}' \
        "$1" "$(api_of "$1")" "$(tr -d '\n' < "$dir/$1/admin.token")" "$dir/$1/data"
}
(
    umask 077
    {
        printf '{\n  "ca": "%s",\n  "release_key": "%s",\n  "hub": %s,\n  "cities": {' \
            "$dir/pki/ca.crt" "$dir/coordinator/release.key" "$(json_node national)"
        sep=""
        for config in "$dir"/*/node.toml; do
            name=$(basename "$(dirname "$config")")
            [ "$name" = national ] && continue
            printf '%s\n    "%s": %s' "$sep" "$name" "$(json_node "$name")"
            sep=","
        done
        printf '\n  }\n}\n'
    } > "$dir/federation.json.new"
    mv "$dir/federation.json.new" "$dir/federation.json"
)
federation=$dir/federation.json

# The cities in the hub's directory, through its API; the hub is started for it if need be.
hub_pid=""
stop_hub() {
    if [ -n "$hub_pid" ]; then
        kill -TERM "$hub_pid" 2>/dev/null || true
        wait "$hub_pid" || true
        hub_pid=""
    fi
}
trap stop_hub EXIT
if ! "$SFS_CLI" --federation "$federation" --node hub cities list >/dev/null 2>&1; then
    log=$dir/national/bootstrap-run.log
    # Emptied here, not by the background job's redirection: that runs in the child, maybe
    # after the wait below has already read an earlier run's "ready" line.
    : > "$log"
    "$SFS_NODE" run --config "$dir/national/node.toml" >> "$log" 2>&1 &
    hub_pid=$!
    tries=0
    until grep -q " ready: " "$log"; do
        tries=$((tries + 1))
        if [ $tries -gt 300 ] || ! kill -0 "$hub_pid" 2>/dev/null; then
            echo "bootstrap.sh: the hub did not start to add the cities to its directory:" >&2
            cat "$log" >&2
            exit 1
        fi
        sleep 0.1
    done
fi
for spec in "$@"; do
    city=${spec%%:*}
    rest=${spec#"$city"}; rest=${rest#:}
    display=${rest%%:*}; county=${rest#"$display"}; county=${county#:}
    [ -n "$display" ] || display=$city
    [ -n "$county" ] || county=-
    if ! out=$("$SFS_CLI" --federation "$federation" --node hub cities add --id "$city" \
        --display-name "$display" --county "$county" 2>&1); then
        case $out in
            *"already a member"*) ;;
            *) echo "bootstrap.sh: adding $city to the directory: $out" >&2; exit 1 ;;
        esac
    fi
done
stop_hub
echo "bootstrapped: $dir (hub national, cities:$ids); sfs --federation $federation --node hub cities list"
