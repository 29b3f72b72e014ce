#!/bin/sh
# The `cargo xtask lab` demo, run inside the lab VM.
#
#   sh demo.sh setup     build the topology and start the backends (returns when they listen)
#   sh demo.sh traffic   steady client traffic with a burst every 30 s, forever
#
# Three IPVS directors: the VM's own namespace ("host") and the named namespaces lb-a and lb-b
# (in /run/netns, where `ipvs-telemetry --netns.discover /run/netns` finds them). Each director N
# has, on its loopback, VIP 10.N.0.1 and fwmark VIP 10.N.0.2, and these services:
#   TCP 10.N.0.1:80  wrr  -> 3 backends :8080 (weights 1 1 2), NAT
#   UDP 10.N.0.1:53  wrr  -> 2 backends :8053, NAT
#   FWM N            lc   -> 3 backends :8081 (TCP to 10.N.0.2:9000, marked by iptables), NAT
# The backends run lab-server in namespace be-<director>, behind a veth (director 10.N.1.1,
# backends 10.N.1.2-4), answering after 0, 5 and 20 ms. Clients run in the director's namespace.
set -e

DIRECTORS="host:100 lb-a:101 lb-b:102"

# Runs a command in a director's namespace.
in_ns() {
    ns=$1
    shift
    if [ "$ns" = host ]; then "$@"; else ip netns exec "$ns" "$@"; fi
}

setup_director() {
    name=$1 n=$2 be=be-$1
    if [ "$name" != host ]; then
        ip netns add "$name"
        ip -n "$name" link set lo up
        in_ns "$name" sysctl -q -w net.ipv4.ip_forward=1
        in_ns "$name" sysctl -q -w net.ipv4.vs.conntrack=1 2>/dev/null || true
    fi
    ip netns add "$be"
    ip -n "$be" link set lo up
    # veth: "vb$n" in the director, "eth0" in the backends' namespace.
    ip link add "vb$n" type veth peer name eth0 netns "$be"
    if [ "$name" != host ]; then ip link set "vb$n" netns "$name"; fi
    in_ns "$name" ip addr add "10.$n.1.1/24" dev "vb$n"
    in_ns "$name" ip link set "vb$n" up
    for b in 2 3 4; do ip -n "$be" addr add "10.$n.1.$b/24" dev eth0; done
    ip -n "$be" link set eth0 up
    ip -n "$be" route add default via "10.$n.1.1"
    in_ns "$name" ip addr add "10.$n.0.1/32" dev lo
    in_ns "$name" ip addr add "10.$n.0.2/32" dev lo
    in_ns "$name" iptables -t mangle -A OUTPUT -d "10.$n.0.2" -p tcp --dport 9000 -j MARK --set-mark "$n"

    in_ns "$name" ipvsadm -A -t "10.$n.0.1:80" -s wrr
    in_ns "$name" ipvsadm -a -t "10.$n.0.1:80" -r "10.$n.1.2:8080" -m -w 1
    in_ns "$name" ipvsadm -a -t "10.$n.0.1:80" -r "10.$n.1.3:8080" -m -w 1
    in_ns "$name" ipvsadm -a -t "10.$n.0.1:80" -r "10.$n.1.4:8080" -m -w 2
    in_ns "$name" ipvsadm -A -u "10.$n.0.1:53" -s wrr
    in_ns "$name" ipvsadm -a -u "10.$n.0.1:53" -r "10.$n.1.2:8053" -m -w 1
    in_ns "$name" ipvsadm -a -u "10.$n.0.1:53" -r "10.$n.1.3:8053" -m -w 3
    in_ns "$name" ipvsadm -A -f "$n" -s lc
    for b in 2 3 4; do in_ns "$name" ipvsadm -a -f "$n" -r "10.$n.1.$b:8081" -m; done

    delay_2=0ms delay_3=5ms delay_4=20ms
    for b in 2 3 4; do
        eval "delay=\$delay_$b"
        setsid ip netns exec "$be" lab-server --bind "10.$n.1.$b" --tcp 8080 --tcp 8081 \
            --udp 8053 --delay "$delay" --name "$name-be$b" >"/var/log/lab/$be-$b.log" 2>&1 &
    done
    for b in 2 3 4; do
        ip netns exec "$be" lab-client wait-tcp "10.$n.1.$b:8081" --timeout 30s >/dev/null
    done
}

traffic() {
    i=0
    while true; do
        for d in $DIRECTORS; do
            name=${d%%:*} n=${d##*:}
            in_ns "$name" lab-client tcp "10.$n.0.1:80" -n 20 --rate 20 -c 4 --allow-errors &
            in_ns "$name" lab-client udp "10.$n.0.1:53" -n 10 --rate 10 -c 2 --allow-errors &
            in_ns "$name" lab-client tcp "10.$n.0.2:9000" -n 5 --rate 5 --allow-errors &
            if [ $((i % 30)) -eq 29 ]; then
                # A burst: many connections as fast as the VM makes them.
                in_ns "$name" lab-client tcp "10.$n.0.1:80" -n 300 -c 16 --connect-only --allow-errors &
            fi
        done
        wait
        i=$((i + 1))
    done
}

case "$1" in
setup)
    for d in $DIRECTORS; do setup_director "${d%%:*}" "${d##*:}"; done
    echo "demo: $(ipvsadm -Ln | grep -c '^[TUF]') services in host, backends listening"
    ;;
traffic)
    traffic
    ;;
*)
    echo "usage: $0 setup|traffic" >&2
    exit 2
    ;;
esac
