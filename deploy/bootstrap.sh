#!/bin/sh
# Makes a small federation's PKI, configurations and admin tokens, once.
#
#   bootstrap.sh DIR HUB_HOST CITY [CITY ...]
#
# DIR gets: pki/ (the CA and one certificate per node), coordinator/ (the national
# coordinator's release key pair: move release.key to the coordinator's own machine; every node
# gets release.pub), <node>/node.toml, <node>/data/ and <node>/admin.token. HUB_HOST is the name cities use to reach the hub (it goes in the hub's
# certificate). Existing files are kept, so running it again only adds what is missing.
# Uses only `sfs-node pki` (init, issue, release-key), `sfs-node token` and `sfs-node check-config`.
set -eu
SFS_NODE=${SFS_NODE:-sfs-node}
dir=$1; hub_host=$2; shift 2
mkdir -p "$dir/pki"
[ -f "$dir/pki/ca.crt" ] || "$SFS_NODE" pki init --dir "$dir/pki"
[ -f "$dir/coordinator/release.pub" ] || "$SFS_NODE" pki release-key --out "$dir/coordinator/release.key"

node() { # name role extra-name
    name=$1; role=$2
    [ -f "$dir/pki/nodes/$role-$name.crt" ] || "$SFS_NODE" pki issue --dir "$dir/pki" --node "$name" --role "$role" --name "$3"
    mkdir -p "$dir/$name/data"
    [ -f "$dir/$name/admin.token" ] || (umask 077; "$SFS_NODE" token create --data-dir "$dir/$name/data" --role admin --label bootstrap > "$dir/$name/admin.token")
}

node national hub "$hub_host"
if [ ! -f "$dir/national/node.toml" ]; then
    cat > "$dir/national/node.toml" <<TOML
id = "national"
role = "hub"
data_dir = "data"
[api]
listen = "0.0.0.0:7443"
[federation]
listen = "0.0.0.0:7444"
[metrics]
listen = "0.0.0.0:9464"
[tls]
ca = "../pki/ca.crt"
cert = "../pki/nodes/hub-national.crt"
key = "../pki/nodes/hub-national.key"
[method]
release_public_key = "../coordinator/release.pub"
TOML
fi
"$SFS_NODE" check-config --config "$dir/national/node.toml"

for city in "$@"; do
    node "$city" city "$city"
    if [ ! -f "$dir/$city/node.toml" ]; then
        cat > "$dir/$city/node.toml" <<TOML
id = "$city"
role = "city"
data_dir = "data"
[api]
listen = "0.0.0.0:7443"
[federation]
hub_url = "https://$hub_host:7444"
hub_id = "national"
[metrics]
listen = "0.0.0.0:9464"
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
echo "bootstrapped: $dir (hub national, cities: $*)"
