#!/bin/sh
# One-shot setup of the Redis Cluster in docker-compose.cluster.yml (it runs in the
# `redis-cluster-init` container, from the redis image): creates the cluster, three primaries
# and no replicas, on first start; on later starts, when the nodes already form a cluster,
# introduces them to each other again at their current addresses (containers that were
# recreated may have new IP addresses, which the nodes' nodes.conf does not know). Exits 0 once
# every node reports cluster_state:ok with all nodes connected, non-zero if that does not
# happen in time.
#   CLUSTER_NODES         the nodes, host:port separated by spaces
#                         (default: redis-1:6379 redis-2:6379 redis-3:6379)
#   CLUSTER_WAIT_SECONDS  seconds to wait for the nodes, then for the cluster (default: 60)
set -eu

nodes="${CLUSTER_NODES:-redis-1:6379 redis-2:6379 redis-3:6379}"
timeout="${CLUSTER_WAIT_SECONDS:-60}"

# Prints ip:port for host:port. CLUSTER MEET takes IP addresses only, so names are resolved
# here rather than by Redis.
resolve() {
  host="${1%:*}"
  port="${1##*:}"
  ip="$(getent ahostsv4 "$host" | awk 'NR == 1 { print $1 }')"
  if [ -z "$ip" ]; then
    echo "redis-cluster-init: cannot resolve $host" >&2
    return 1
  fi
  echo "$ip:$port"
}

# One field of CLUSTER INFO (e.g. cluster_state) of the node at ip:port.
cluster_info() {
  redis-cli -h "${1%:*}" -p "${1##*:}" cluster info | tr -d '\r' \
    | awk -F: -v key="$2" '$1 == key { print $2 }'
}

# Whether the node at ip:port has settled: it reports cluster_state:ok and knows exactly the
# $count nodes, each at a connected link, none in handshake or suspected of failure. (A node
# whose peers are unreachable at stale addresses can still say cluster_state:ok for a while,
# so the state alone is not enough.)
settled() {
  [ "$(cluster_info "$1" cluster_state)" = "ok" ] || return 1
  redis-cli -h "${1%:*}" -p "${1##*:}" cluster nodes | tr -d '\r' | awk -v want="$count" '
    NF >= 8 { total++; if ($8 != "connected" || $3 ~ /handshake|fail|noaddr/) bad++ }
    END { exit !(total == want && bad == 0) }'
}

# Wait for every node to answer, and resolve their addresses.
addresses=""
count=0
for node in $nodes; do
  count=$((count + 1))
  waited=0
  until address="$(resolve "$node" 2>/dev/null)" \
    && [ "$(redis-cli -h "${address%:*}" -p "${address##*:}" ping 2>/dev/null)" = "PONG" ]; do
    waited=$((waited + 1))
    if [ "$waited" -ge "$timeout" ]; then
      echo "redis-cluster-init: $node did not answer within ${timeout}s" >&2
      exit 1
    fi
    sleep 1
  done
  addresses="$addresses $address"
done
echo "redis-cluster-init: nodes:$addresses"

fresh=1
for address in $addresses; do
  if [ "$(cluster_info "$address" cluster_known_nodes)" != "1" ] \
    || [ "$(cluster_info "$address" cluster_slots_assigned)" != "0" ]; then
    fresh=0
  fi
done

if [ "$fresh" = 1 ]; then
  echo "redis-cluster-init: creating the cluster"
  # shellcheck disable=SC2086 # one argument per node
  redis-cli --cluster create $addresses --cluster-replicas 0 --cluster-yes
else
  echo "redis-cluster-init: the nodes already form a cluster; introducing them again"
  for address in $addresses; do
    for other in $addresses; do
      if [ "$address" != "$other" ]; then
        redis-cli -h "${address%:*}" -p "${address##*:}" \
          cluster meet "${other%:*}" "${other##*:}" >/dev/null
      fi
    done
  done
fi

waited=0
for address in $addresses; do
  until settled "$address"; do
    waited=$((waited + 1))
    if [ "$waited" -ge "$timeout" ]; then
      echo "redis-cluster-init: $address has not settled after ${timeout}s:" >&2
      redis-cli -h "${address%:*}" -p "${address##*:}" cluster nodes >&2 || true
      exit 1
    fi
    sleep 1
  done
done
first="${addresses# }"
first="${first%% *}"
redis-cli -h "${first%:*}" -p "${first##*:}" cluster nodes
echo "redis-cluster-init: cluster_state:ok on every node, all $count nodes connected"
