# wait-network SECONDS: wait until the container has a default route (its network is up).
waited=0
while ! grep -q '^[^[:space:]]*[[:space:]]00000000[[:space:]]' /proc/net/route; do
    if [ "$waited" -ge "$1" ]; then
        echo "no default route after $1 s; the container has no network (check its bridge, VLAN and DHCP)"
        exit 1
    fi
    sleep 1
    waited=$((waited + 1))
done
echo "default route present after ${waited} s"
